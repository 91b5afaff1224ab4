//! Granting and revoking AccessRights, and the instance's anonymous-requests switch.

use super::{blocking, Service};
use crate::auth::access::manages;
use crate::auth::{Caller, Principal};
use crate::error::{Error, Result};
use crate::meta::{AccessRight, Instance, PermissionType};
use crate::types::{now_millis, parse_rfc3339, AccountId, FileId, RightId};
use serde::Deserialize;
use std::sync::Arc;

/// A grant as clients send it, in Hypi's AccessRight shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRightInput {
    /// Optional client-chosen id, as Hypi allows on upsert.
    #[serde(default)]
    pub hypi: Option<HypiRef>,
    pub resource: String,
    pub resource_type: String,
    #[serde(default)]
    pub fields: Option<String>,
    pub operation_type: String,
    pub operation: String,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    pub permission_type: PermissionType,
    /// Defaults to true: the grantor is the owner or an admin, so the grant is approved.
    #[serde(default)]
    pub approved: Option<bool>,
    pub members: OneOrMany<Member>,
}

/// `{hypi: {id}}` as used for members and client-chosen ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub hypi: HypiRef,
}

/// The `hypi` object of a reference.
#[derive(Debug, Clone, Deserialize)]
pub struct HypiRef {
    #[serde(default)]
    pub id: Option<String>,
}

/// GraphQL input coercion lets one value stand for a list (`members: {hypi: {id: "anonymous"}}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    // Many first: serde would otherwise read a one-element array as a struct's fields.
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

impl Service {
    /// Whether `p` may manage grants on `resource` (a file id or `*`) in its instance.
    fn check_grantor(&self, p: &Principal, resource: &str) -> Result<()> {
        if resource == "*" {
            return Ok(()); // covers only the grantor's own files (all of them, for an admin)
        }
        let id: FileId = resource.parse().map_err(|_| {
            Error::BadRequest(format!("resource {resource:?} is not a file id or *"))
        })?;
        let file = self.readable(&Caller::User(p.clone()), id)?;
        if file.is_sharable == Some(false) && file.created_by != p.account {
            // The owner switched sharing off: only the owner grants on it.
            Err(Error::Forbidden(
                "the owner made this file unsharable: only the owner may grant on it".into(),
            ))
        } else if manages(p, &file.created_by) {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "only the owner or an admin may manage grants on this file".into(),
            ))
        }
    }

    /// Validates and stores grants; all or nothing.
    pub async fn grant(
        self: &Arc<Self>,
        principal: &Principal,
        inputs: Vec<AccessRightInput>,
    ) -> Result<Vec<AccessRight>> {
        if inputs.is_empty() {
            return Err(Error::BadRequest("no access rights given".into()));
        }
        let max = self.config.max_grants_per_request;
        if inputs.len() > max {
            return Err(Error::PayloadTooLarge(format!(
                "{} access rights in one request; at most {max} are accepted",
                inputs.len()
            )));
        }
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let now = now_millis();
            let mut rights = Vec::with_capacity(inputs.len());
            for input in inputs {
                let right = build_right(input, &p, &instance, now)?;
                svc.check_grantor(&p, &right.resource)?;
                if let Some(old) = svc.meta.right(right.id)? {
                    if old.instance != instance.id || !manages(&p, &old.created_by) {
                        return Err(Error::Conflict(format!("access right {} exists", right.id)));
                    }
                }
                rights.push(right);
            }
            // The per-account cap is checked in the same transaction as the write, so
            // concurrent requests cannot overshoot it together. A grant may replace (narrow) an
            // existing one: cached decisions die once it is stored.
            let _stale = svc.hot.change(super::hot::Scope::Grants);
            let _events = svc.right_events(
                &p.account,
                crate::meta::webhooks::WebhookEvent::AccessGranted,
                &rights,
            )?;
            svc.meta
                .put_rights(&rights, svc.config.max_grants_per_account)?;
            Ok(rights)
        })
        .await
    }

    /// Grants on a resource, for its owner or an admin.
    pub async fn rights_on(
        self: &Arc<Self>,
        principal: &Principal,
        resource: String,
    ) -> Result<Vec<AccessRight>> {
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            svc.check_grantor(&p, &resource)?;
            let Some(instance) = svc.meta.instance_by_domain(&p.instance)? else {
                return Ok(vec![]);
            };
            // A non-admin's `*` listing reads only that account's wildcards, not the
            // instance's.
            if resource == "*" && !p.admin {
                return svc.meta.wildcards_by(instance.id, &p.account);
            }
            svc.meta.rights_on(instance.id, &resource)
        })
        .await
    }

    /// Revokes a grant: its grantor, the resource's owner, or an admin may. Takes effect on the
    /// next request: cached grant decisions die before this returns.
    pub async fn revoke(
        self: &Arc<Self>,
        principal: &Principal,
        id: RightId,
    ) -> Result<AccessRight> {
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let missing = || Error::NotFound("no such access right".into());
            let right = svc.meta.right(id)?.ok_or_else(missing)?;
            let instance = svc.meta.instance(right.instance)?.ok_or_else(missing)?;
            if !instance.domain.eq_ignore_ascii_case(&p.instance) {
                return Err(missing());
            }
            // The grantor, an admin, or the owner of the granted file. Only "not yours" and
            // "no such file" read as a missing right: storage errors stay errors.
            let allowed = manages(&p, &right.created_by)
                || (right.resource != "*"
                    && match svc.check_grantor(&p, &right.resource) {
                        Ok(()) => true,
                        Err(Error::NotFound(_) | Error::Forbidden(_) | Error::BadRequest(_)) => {
                            false
                        }
                        Err(e) => return Err(e),
                    });
            if !allowed {
                return Err(missing());
            }
            let _stale = svc.hot.change(super::hot::Scope::Grants);
            let _events = svc.right_events(
                &p.account,
                crate::meta::webhooks::WebhookEvent::AccessRevoked,
                std::slice::from_ref(&right),
            )?;
            svc.meta.delete_right(id)?;
            Ok(right)
        })
        .await
    }

    /// Switches anonymous requests on or off for an instance (its admins only).
    pub async fn set_anonymous(
        self: &Arc<Self>,
        principal: &Principal,
        domain: String,
        on: bool,
    ) -> Result<Instance> {
        let domain = domain.to_ascii_lowercase();
        if !principal.admin || principal.instance != domain {
            return Err(Error::Forbidden(format!(
                "only an admin of {domain} may change it"
            )));
        }
        let svc = self.clone();
        blocking(move || {
            let mut instance = svc.meta.ensure_instance(&domain)?;
            instance.anonymous_requests = on;
            instance.updated = now_millis();
            let _stale = svc.hot.change(super::hot::Scope::All);
            svc.meta.put_instance(&instance)?;
            Ok(instance)
        })
        .await
    }

    /// An instance's settings, for its members.
    pub async fn instance(
        self: &Arc<Self>,
        principal: &Principal,
        domain: String,
    ) -> Result<Instance> {
        let domain = domain.to_ascii_lowercase();
        if principal.instance != domain {
            return Err(Error::NotFound(format!("no instance {domain}")));
        }
        let svc = self.clone();
        blocking(move || svc.meta.ensure_instance(&domain)).await
    }
}

fn build_right(
    input: AccessRightInput,
    p: &Principal,
    instance: &Instance,
    now: u64,
) -> Result<AccessRight> {
    let bad = |m: String| Error::BadRequest(m);
    let id = match input.hypi.and_then(|h| h.id) {
        Some(s) => s
            .parse()
            .map_err(|_| bad(format!("hypi.id {s:?} is not a ULID")))?,
        None => RightId::new(),
    };
    let resource_type = input.resource_type.trim().to_string();
    if !(resource_type == "*" || resource_type.eq_ignore_ascii_case("File")) {
        return Err(bad(format!(
            "resourceType {resource_type:?} is not supported (File or *)"
        )));
    }
    for (field, v) in [
        ("operationType", &input.operation_type),
        ("operation", &input.operation),
        ("resource", &input.resource),
    ] {
        if v.trim().is_empty() {
            return Err(bad(format!("{field} must not be empty")));
        }
    }
    if !(input.operation_type == "*"
        || ["Query", "Mutation"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&input.operation_type)))
    {
        return Err(bad(format!(
            "operationType {:?} must be Query, Mutation or *",
            input.operation_type
        )));
    }
    let date = |name: &str, v: Option<String>| -> Result<Option<u64>> {
        v.map(|s| {
            parse_rfc3339(&s).ok_or_else(|| bad(format!("{name} {s:?} is not an RFC 3339 date")))
        })
        .transpose()
    };
    let start_date = date("startDate", input.start_date)?;
    let end_date = date("endDate", input.end_date)?;
    if let (Some(s), Some(e)) = (start_date, end_date) {
        if e <= s {
            return Err(bad("endDate must be after startDate".into()));
        }
    }
    let members: Vec<String> = input
        .members
        .into_vec()
        .into_iter()
        .map(|m| m.hypi.id.filter(|id| !id.trim().is_empty()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("every member needs hypi.id".into()))?;
    if members.is_empty() {
        return Err(bad("members must not be empty".into()));
    }
    Ok(AccessRight {
        id,
        instance: instance.id,
        created_by: AccountId(p.account.0.clone()),
        created: now,
        updated: now,
        resource: input.resource.trim().to_string(),
        resource_type,
        fields: input.fields,
        operation_type: input.operation_type,
        operation: input.operation,
        start_date,
        end_date,
        permission_type: input.permission_type,
        approved: input.approved.unwrap_or(true),
        members,
        granted_by_admin: p.admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{FileStore, GrantStore, InstanceStore, SledMeta};
    use crate::types::InstanceId;
    use serde_json::json;

    fn principal(admin: bool) -> Principal {
        Principal {
            account: AccountId("alice".into()),
            instance: "a.test".into(),
            admin,
        }
    }

    fn instance() -> Instance {
        Instance {
            id: InstanceId::new(),
            domain: "a.test".into(),
            anonymous_requests: false,
            created: 0,
            updated: 0,
        }
    }

    /// A complete, valid input in Hypi's shape, with `edit` applied to its JSON.
    fn input(edit: impl FnOnce(&mut serde_json::Value)) -> AccessRightInput {
        let mut v = json!({
            "resource": " * ", "resourceType": "File", "operationType": "Query",
            "operation": "read", "permissionType": "RBP",
            "members": [{"hypi": {"id": "bob"}}]
        });
        edit(&mut v);
        serde_json::from_value(v).expect("input parses")
    }

    #[test]
    fn build_right_from_input() {
        let inst = instance();
        let r = build_right(input(|_| {}), &principal(false), &inst, 7).unwrap();
        assert_eq!(r.instance, inst.id);
        assert_eq!(r.created_by, AccountId("alice".into()));
        assert_eq!((r.created, r.updated), (7, 7));
        assert_eq!(r.resource, "*", "trimmed");
        assert!(r.approved, "approved by default");
        assert!(!r.granted_by_admin);
        assert_eq!(r.members, vec!["bob".to_string()]);
        assert_eq!((r.start_date, r.end_date), (None, None));

        let admin = build_right(input(|_| {}), &principal(true), &inst, 7).unwrap();
        assert!(admin.granted_by_admin, "an admin's grant is marked so");

        let chosen = "01HX5V3N0000000000000000AB";
        let r = build_right(
            input(|v| {
                v["hypi"] = json!({"id": chosen});
                v["approved"] = json!(false);
                v["members"] = json!({"hypi": {"id": "anonymous"}});
                v["startDate"] = json!("2030-01-01T00:00:00Z");
                v["endDate"] = json!("2030-01-02T00:00:00Z");
                v["resourceType"] = json!("*");
                v["operationType"] = json!("mutation");
            }),
            &principal(false),
            &inst,
            7,
        )
        .unwrap();
        assert_eq!(r.id.to_string(), chosen);
        assert!(!r.approved);
        assert_eq!(
            r.members,
            vec!["anonymous".to_string()],
            "one member for a list"
        );
        assert_eq!(r.end_date.unwrap() - r.start_date.unwrap(), 86_400_000);
        assert_eq!(r.resource_type, "*");
    }

    #[test]
    fn build_right_refuses_bad_input() {
        let inst = instance();
        type Edit = fn(&mut serde_json::Value);
        let cases: [(&str, Edit); 10] = [
            ("hypi.id", |v| v["hypi"] = json!({"id": "not-a-ulid"})),
            ("resourceType", |v| v["resourceType"] = json!("Image")),
            ("operationType", |v| {
                v["operationType"] = json!("Subscription")
            }),
            ("operationType", |v| v["operationType"] = json!(" ")),
            ("operation", |v| v["operation"] = json!("")),
            ("resource", |v| v["resource"] = json!("  ")),
            ("startDate", |v| v["startDate"] = json!("tomorrow")),
            ("endDate must be after", |v| {
                v["startDate"] = json!("2030-01-02T00:00:00Z");
                v["endDate"] = json!("2030-01-01T00:00:00Z");
            }),
            ("hypi.id", |v| v["members"] = json!([{"hypi": {}}])),
            ("members must not be empty", |v| v["members"] = json!([])),
        ];
        for (want, edit) in cases {
            match build_right(input(edit), &principal(false), &inst, 7) {
                Err(Error::BadRequest(m)) => assert!(m.contains(want), "{want}: {m}"),
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    /// Before the fix, `check_grantor(...).is_ok()` turned a storage error on the granted file
    /// into "no such access right".
    #[tokio::test]
    async fn revoke_reports_storage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let meta_dir = dir.path().join("meta");
        // One handle throughout: sled releases its file lock from a background thread after
        // drop, so reopening the same directory right away can fail with WouldBlock.
        let meta = SledMeta::open(&meta_dir).unwrap();
        let inst = meta.ensure_instance("a.test").unwrap();
        let f = crate::meta::contract::file(inst.id, "bob", "/", "a.txt", 1);
        meta.insert_files(&[(f.clone(), None)]).unwrap();
        let r = crate::meta::contract::right(inst.id, "carol", false, &f.id.to_string(), &["x"]);
        meta.put_rights(std::slice::from_ref(&r), u64::MAX).unwrap();
        let right_id = r.id;
        // The file record is damaged on disk: reading it is a storage error.
        meta.raw_db()
            .open_tree("files")
            .unwrap()
            .insert(f.id.to_bytes(), &b"{not json"[..])
            .unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let blobs = crate::store::LocalStore::open(dir.path()).unwrap();
        let keys = crate::auth::Keys::load(&config.auth, dir.path()).unwrap();
        let svc = Arc::new(Service::new(config, Arc::new(meta), Arc::new(blobs), keys));
        let bob = Principal {
            account: AccountId("bob".into()),
            instance: "a.test".into(),
            admin: false,
        };
        match svc.revoke(&bob, right_id).await {
            Err(e @ Error::Failed { .. }) => {
                assert_eq!(e.code(), "INTERNAL");
                assert!(e.to_string().contains("corrupt"), "{e}");
            }
            other => panic!("a storage error must not read as 404: {other:?}"),
        }
    }
}
