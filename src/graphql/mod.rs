//! The Hypi-compatible GraphQL API on `POST /graphql` (GraphiQL on `GET /graphql`).
//! Resolvers only translate: every rule lives in the service, the same as for REST.

pub mod assets;
pub mod direct;
pub mod types;
pub mod webhooks;

use crate::auth::Caller;
use crate::error::Error;
use crate::service::access::{AccessRightInput as GrantInput, HypiRef, Member, OneOrMany};
use crate::service::query::{arcql, paging, Ctx, Kind, PageArgs};
use crate::service::Service;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::{
    Context, EmptySubscription, ErrorExtensionValues, ErrorExtensions, Object, Request, Schema,
    ServerError, ServerResult, ValidationResult, ID,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use types::*;

/// The schema type served.
pub type DepotSchema = Schema<Query, Mutation, EmptySubscription>;

/// Hypi's queries and the direct flows' (`direct.rs`).
#[derive(async_graphql::MergedObject, Default)]
#[graphql(name = "QueryRoot")]
pub struct Query(
    QueryRoot,
    direct::DirectQuery,
    assets::AssetQuery,
    webhooks::WebhookQuery,
);

/// Hypi's mutations and the direct flows'.
#[derive(async_graphql::MergedObject, Default)]
#[graphql(name = "MutationRoot")]
pub struct Mutation(
    MutationRoot,
    direct::DirectMutation,
    assets::AssetMutation,
    webhooks::WebhookMutation,
);

/// Builds the schema around the service. Depth, cost and time are bounded so one request
/// cannot ask for unbounded work (see [`Limits`]).
pub fn schema(service: Arc<Service>) -> DepotSchema {
    PAGE_CAP.store(service.config.max_page_size, Ordering::Relaxed);
    let limits = Limits {
        max_cost: service.config.graphql_max_cost,
        budget: Duration::from_millis(service.config.graphql_time_budget_ms),
    };
    Schema::build(Query::default(), Mutation::default(), EmptySubscription)
        .data(service)
        .limit_depth(16)
        .extension(limits)
        .finish()
}

/// The `hypi-domain` header of a GraphQL request: the instance an anonymous caller asks in.
#[derive(Debug, Clone, Default)]
pub struct RequestDomain(pub Option<String>);

impl RequestDomain {
    /// The header's value, when there is a readable one.
    pub fn of(headers: &actix_web::http::header::HeaderMap) -> Self {
        RequestDomain(
            headers
                .get("hypi-domain")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        )
    }
}

/// When a request's time budget runs out.
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant, Duration);

/// The page size `find` is priced at when its selection is costed; the configured
/// `max_page_size` (one schema per process, so one value).
static PAGE_CAP: AtomicUsize = AtomicUsize::new(paging::DEFAULT_PAGE);

/// The fixed price of one walk over records, whatever its page: the instance and grant lookups
/// and a hand-off to the blocking pool. Keeps thousands of `first: 1` aliases from being cheap.
const WALK_BASE: usize = 50;

/// Walks one request may run at once: aliased `find`s are resolved concurrently, and each
/// holds a blocking-pool thread while it walks, so without this one request could occupy
/// hundreds of them.
const LANES: usize = 2;

/// The price of one `find` (see `graphql_max_cost`): page size x (what each node selects +
/// what the filter costs per record), plus [`WALK_BASE`]. A query that does not parse is
/// priced as `*`; it is refused when it runs.
fn find_cost(first: Option<i32>, last: Option<i32>, arcql: &str, child_complexity: usize) -> usize {
    let cap = PAGE_CAP.load(Ordering::Relaxed).max(1);
    let page = first.or(last).map_or(paging::DEFAULT_PAGE.min(cap), |n| {
        usize::try_from(n).unwrap_or(1).clamp(1, cap)
    });
    let filter = arcql::parse(arcql).map_or(1, |q| q.cost());
    page.saturating_mul(child_complexity.saturating_add(filter))
        .saturating_add(WALK_BASE)
}

/// The price of a mutation by query: it walks like a page of the default size.
fn mutation_cost(arcql: &str) -> usize {
    let filter = arcql::parse(arcql).map_or(1, |q| q.cost());
    paging::DEFAULT_PAGE
        .saturating_mul(filter.saturating_add(1))
        .saturating_add(WALK_BASE)
}

/// The request's walk lanes (see [`LANES`]).
struct Lanes(Arc<tokio::sync::Semaphore>);

/// Waits for one of the request's walk lanes; held until the walk is done.
async fn lane<'a>(ctx: &Context<'a>) -> Option<tokio::sync::SemaphorePermit<'a>> {
    match ctx.data_opt::<Lanes>() {
        Some(l) => l.0.acquire().await.ok(),
        None => None,
    }
}

/// Request limits: the cost of a whole request is computed before it runs (every alias and
/// fragment counted) and refused above `max_cost` with `extensions.code`
/// `QUERY_TOO_COSTLY`; each request gets a deadline after `budget`, which `find` and the
/// mutations check per record walked.
struct Limits {
    max_cost: usize,
    budget: Duration,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits {
            max_cost: self.max_cost,
            budget: self.budget,
        })
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = request
            .data(Deadline(Instant::now() + self.budget, self.budget))
            .data(Lanes(Arc::new(tokio::sync::Semaphore::new(LANES))));
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.complexity > self.max_cost {
            let mut e = ServerError::new(
                format!(
                    "this request would cost {} units of work; the limit is {}: ask for fewer \
                     records, fewer aliases or simpler wildcard patterns",
                    result.complexity, self.max_cost
                ),
                None,
            );
            let mut ext = ErrorExtensionValues::default();
            ext.set("code", "QUERY_TOO_COSTLY");
            e.extensions = Some(ext);
            return Err(vec![e]);
        }
        Ok(result)
    }
}

/// Maps a service error onto a GraphQL error with the same `code` as REST (and the position of
/// an ArcQL syntax error).
fn gql(e: Error) -> async_graphql::Error {
    let code = e.code();
    let position = match &e {
        Error::Query(_, p) => Some(*p),
        _ => None,
    };
    // The same hiding (and logging) of internal details as the HTTP edge.
    let message = match &e {
        Error::Query(m, _) => format!("invalid arcql: {m}"),
        other => other.client_message(),
    };
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set("code", code);
        if let Some(p) = position {
            ext.set("position", p as u64);
        }
    })
}

fn kind(t: HypiMutationType) -> Kind {
    match t {
        HypiMutationType::File => Kind::File,
        HypiMutationType::Image => Kind::Image,
        HypiMutationType::AccessRight => Kind::AccessRight,
    }
}

/// The service and the query context of a request: caller, `hypi-domain`, deadline.
fn parts<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Arc<Service>, Ctx)> {
    let mut q = Ctx::new(ctx.data::<Caller>()?.clone());
    q.domain = ctx.data_opt::<RequestDomain>().and_then(|d| d.0.clone());
    if let Some(Deadline(at, budget)) = ctx.data_opt::<Deadline>() {
        q.deadline = Some(*at);
        q.budget = *budget;
    }
    Ok((ctx.data::<Arc<Service>>()?, q))
}

/// Queries.
#[derive(Default)]
pub struct QueryRoot;

#[Object(name = "HypiQuery")]
impl QueryRoot {
    /// Records of `type` matching `arcql` that the caller may read, a page at a time.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "find_cost(first, last, &arcql, child_complexity)")]
    async fn find(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] record_type: HypiMutationType,
        arcql: String,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        include_trashed: Option<bool>,
    ) -> async_graphql::Result<HypiFilterConnection> {
        let (svc, caller) = parts(ctx)?;
        let _lane = lane(ctx).await;
        let args = PageArgs {
            first,
            after,
            last,
            before,
            include_trashed: include_trashed.unwrap_or(false),
        };
        let found = svc
            .find(caller, kind(record_type), arcql, args)
            .await
            .map_err(gql)?;
        let edges: Vec<HypiResultEdge> = found
            .nodes
            .into_iter()
            .map(|n| HypiResultEdge {
                cursor: ID(n.id()),
                node: n.into(),
            })
            .collect();
        let cursor = |e: Option<&HypiResultEdge>| e.map(|e| e.cursor.clone());
        Ok(HypiFilterConnection {
            page_info: PageInfo {
                has_previous_page: found.has_previous,
                has_next_page: found.has_next,
                start_cursor: cursor(edges.first()),
                end_cursor: cursor(edges.last()),
            },
            edges,
        })
    }

    /// One record by `hypi.id`, or null when it does not exist or the caller may not read it.
    #[graphql(complexity = "WALK_BASE + child_complexity")]
    async fn get(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] record_type: HypiMutationType,
        id: String,
    ) -> async_graphql::Result<Option<HypiRootAggregate>> {
        let (svc, caller) = parts(ctx)?;
        let _lane = lane(ctx).await;
        let node = svc
            .get_node(caller, kind(record_type), id)
            .await
            .map_err(gql)?;
        Ok(node.map(Into::into))
    }
}

/// Mutations.
#[derive(Default)]
pub struct MutationRoot;

#[Object(name = "HypiMutation")]
impl MutationRoot {
    /// Creates AccessRights (or legacy Permissions, translated into AccessRights).
    async fn upsert(
        &self,
        ctx: &Context<'_>,
        values: HypiUpsertInputUnion,
    ) -> async_graphql::Result<Vec<Hypi>> {
        let (svc, caller) = parts(ctx)?;
        let principal = caller.caller.require().map_err(gql)?;
        let mut out = Vec::new();
        for f in values.file.unwrap_or_default() {
            let file = svc.upsert_file(principal, f.into()).await.map_err(gql)?;
            out.push(file_hypi(&file));
        }
        if values.access_right.is_none() && values.permission.is_none() {
            return Ok(out);
        }
        let mut grants: Vec<GrantInput> = Vec::new();
        for r in values.access_right.unwrap_or_default() {
            grants.push(GrantInput {
                hypi: r.hypi.map(|h| HypiRef {
                    id: h.id.map(|i| i.0),
                }),
                resource: r.resource,
                resource_type: r.resource_type,
                fields: r.fields,
                operation_type: r.operation_type,
                operation: r.operation,
                start_date: r.start_date,
                end_date: r.end_date,
                permission_type: match r.permission_type {
                    AccessRightType::Rbp => crate::meta::PermissionType::RBP,
                    AccessRightType::Sbp => crate::meta::PermissionType::SBP,
                },
                approved: r.approved,
                members: members(r.members),
            });
        }
        for p in values.permission.unwrap_or_default() {
            grants.extend(from_permission(p).map_err(gql)?);
        }
        let rights = svc.grant(principal, grants).await.map_err(gql)?;
        out.extend(rights.iter().map(right_hypi));
        Ok(out)
    }

    /// Moves and/or renames a File; a directory moves with everything below it, in one step.
    /// `url.path` does not change.
    async fn move_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        directory: Option<String>,
        name: Option<String>,
        on_conflict: Option<ConflictPolicy>,
    ) -> async_graphql::Result<File> {
        let (svc, caller) = parts(ctx)?;
        let principal = caller.caller.require().map_err(gql)?;
        let id = id.parse().map_err(|_| gql(Error::not_found()))?;
        let policy = on_conflict.unwrap_or(ConflictPolicy::Fail).into();
        let moved = svc
            .move_entry(principal, id, directory, name, policy)
            .await
            .map_err(gql)?;
        Ok(File(moved))
    }

    /// Deletes matching records the caller may delete; returns how many went.
    #[graphql(complexity = "mutation_cost(&arcql)")]
    async fn delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] record_type: HypiMutationType,
        arcql: String,
        #[graphql(default = false)] clear_array_references: bool,
    ) -> async_graphql::Result<i32> {
        let _ = clear_array_references; // depot keeps no array references to clear
        let (svc, caller) = parts(ctx)?;
        svc.delete_matching(caller, kind(record_type), arcql)
            .await
            .map_err(gql)
    }

    /// Moves matching files to the trash: hidden from `find` and not downloadable.
    #[graphql(complexity = "mutation_cost(&arcql)")]
    async fn trash(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] record_type: HypiMutationType,
        arcql: String,
    ) -> async_graphql::Result<i32> {
        let (svc, caller) = parts(ctx)?;
        svc.set_trashed(caller, kind(record_type), arcql, true)
            .await
            .map_err(gql)
    }

    /// Restores matching trashed files.
    #[graphql(complexity = "mutation_cost(&arcql)")]
    async fn untrash(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] record_type: HypiMutationType,
        arcql: String,
    ) -> async_graphql::Result<i32> {
        let (svc, caller) = parts(ctx)?;
        svc.set_trashed(caller, kind(record_type), arcql, false)
            .await
            .map_err(gql)
    }
}

fn members(accounts: Vec<AccountInput>) -> OneOrMany<Member> {
    OneOrMany::Many(
        accounts
            .into_iter()
            .map(|a| Member {
                hypi: HypiRef {
                    id: a.hypi.id.map(|i| i.0),
                },
            })
            .collect(),
    )
}

/// Translates a legacy Permission: one AccessRight per operation, members from its positive
/// AccountPolicies (plus `*` for includeAllAccounts).
fn from_permission(p: PermissionInput) -> Result<Vec<GrantInput>, Error> {
    let bad = |m: &str| Error::BadRequest(format!("Permission: {m}"));
    let mut accounts = Vec::new();
    for policy in p.policies.unwrap_or_default() {
        let implementation = policy.hypi.and_then(|h| h.implementation);
        if implementation
            .as_deref()
            .is_some_and(|i| i != "AccountPolicy")
        {
            return Err(bad("only AccountPolicy policies are supported"));
        }
        if policy.logic == Some(Logic::Negative) {
            return Err(bad("Negative policies are not supported"));
        }
        accounts.extend(policy.accounts.unwrap_or_default());
    }
    if p.include_all_accounts == Some(true) {
        accounts.push(AccountInput {
            hypi: HypiInput {
                id: Some(ID("*".into())),
                implementation: None,
            },
        });
    }
    if accounts.is_empty() {
        return Err(bad(
            "no accounts: add an AccountPolicy or includeAllAccounts",
        ));
    }
    let operation_type = match p.operation_type.unwrap_or(OperationType::Query) {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
    };
    let operations = p
        .operations
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| vec!["*".into()]);
    Ok(operations
        .into_iter()
        .map(|operation| GrantInput {
            hypi: None,
            resource: p.resource.clone().unwrap_or_else(|| "*".into()),
            resource_type: p.resource_type.clone().unwrap_or_else(|| "File".into()),
            fields: None,
            operation_type: operation_type.into(),
            operation,
            start_date: None,
            end_date: None,
            permission_type: crate::meta::PermissionType::RBP,
            approved: Some(true),
            members: members(accounts.clone()),
        })
        .collect())
}

/// Attaches the caller to a request, and keeps the schema's shape from tokenless callers
/// unless `graphql_anonymous_introspection` is on: the schema is public in the source, but an
/// open introspection endpoint invites automated probing.
pub fn for_caller(
    request: async_graphql::Request,
    caller: Caller,
    config: &crate::config::Config,
) -> async_graphql::Request {
    let anonymous = caller == Caller::Anonymous;
    let request = request.data(caller);
    if anonymous && !config.graphql_anonymous_introspection {
        request.disable_introspection()
    } else {
        request
    }
}
