//! Mutations by query: trash, untrash and delete what an ArcQL query matches, for the records
//! the caller manages.

use super::fields::parse_query;
use super::plan::Walk;
use super::{Ctx, Kind, Node};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::service::{blocking, Service};
use crate::types::now_millis;
use std::sync::Arc;

impl Service {
    /// `trash` (on = true) or `untrash` files matching `arcql`; returns how many changed.
    pub async fn set_trashed(
        self: &Arc<Self>,
        ctx: Ctx,
        kind: Kind,
        arcql: String,
        on: bool,
    ) -> Result<i32> {
        ctx.caller.require()?;
        if kind != Kind::File {
            return Err(Error::BadRequest("only File records can be trashed".into()));
        }
        let q = parse_query(kind, &arcql)?;
        let svc = self.clone();
        blocking(move || {
            let Some(view) = svc.view(&ctx)? else {
                return Ok(0);
            };
            let mut n = 0;
            for node in svc.matching(&ctx, &view, kind, &q, Some(!on), Walk::default())? {
                let Node::File(f) = node else { continue };
                if !view.manages(&f) {
                    continue;
                }
                if f.is_directory() {
                    // The whole subtree, in one step (and back as a whole).
                    if svc.trash_tree(&view.caller, |g| view.manages(g), &f, on)? {
                        n += 1;
                    }
                    continue;
                }
                // A move rewrites records too: never interleave with one, and change the record
                // as it is now (the one matched may predate a move or another change).
                let tree = svc.tree.of(view.instance.id);
                let _tree = tree.read()?;
                let Some(mut f) = svc.meta.file(f.id)? else {
                    continue;
                };
                if !view.manages(&f) || f.is_directory() {
                    continue;
                }
                f.trashed = on.then(now_millis);
                f.updated = now_millis();
                let _stale = svc.hot.change(crate::service::hot::Scope::File(f.id));
                let _events = svc.file_events(
                    &actor_of(&view.caller),
                    crate::meta::webhooks::WebhookEvent::FileUpdated,
                    [&f],
                )?;
                svc.meta.update_file(&f)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    /// `delete(type, arcql)`: Files (with their blobs when unreferenced) or AccessRights.
    pub async fn delete_matching(
        self: &Arc<Self>,
        ctx: Ctx,
        kind: Kind,
        arcql: String,
    ) -> Result<i32> {
        ctx.caller.require()?;
        let q = parse_query(kind, &arcql)?;
        let svc = self.clone();
        blocking(move || {
            let Some(view) = svc.view(&ctx)? else {
                return Ok(0);
            };
            let mut n = 0;
            match kind {
                Kind::Image => {
                    return Err(Error::BadRequest("delete the Image's File instead".into()))
                }
                Kind::File => {
                    for node in svc.matching(&ctx, &view, kind, &q, None, Walk::default())? {
                        if let Node::File(f) = node {
                            if !view.manages(&f) {
                                continue;
                            }
                            if f.is_directory() {
                                let Caller::User(p) = &ctx.caller else {
                                    continue;
                                };
                                if svc.remove_tree(p, &f)? > 0 {
                                    n += 1;
                                }
                            } else if svc.remove_file(&actor_of(&ctx.caller), &f)? {
                                n += 1;
                            }
                        }
                    }
                }
                Kind::AccessRight => {
                    for node in svc.matching(&ctx, &view, kind, &q, None, Walk::default())? {
                        if let Node::AccessRight(r) = node {
                            let _stale = svc.hot.change(crate::service::hot::Scope::Grants);
                            let _events = svc.right_events(
                                &actor_of(&ctx.caller),
                                crate::meta::webhooks::WebhookEvent::AccessRevoked,
                                std::slice::from_ref(&r),
                            )?;
                            if svc.meta.delete_right(r.id)? {
                                n += 1;
                            }
                        }
                    }
                }
            }
            Ok(n)
        })
        .await
    }
}

/// Who a change is attributed to in webhook events (`actor`): the caller's account, or
/// `anonymous`.
fn actor_of(caller: &Caller) -> crate::types::AccountId {
    match caller {
        Caller::User(p) => p.account.clone(),
        Caller::Anonymous => crate::types::AccountId("anonymous".into()),
    }
}
