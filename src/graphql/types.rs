//! GraphQL output and input types, with Hypi's names.

use crate::meta::{AccessRight, FileRecord, ImageRecord, PermissionType};
use crate::service::query::Node;
use crate::types::rfc3339;
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Union, ID};

/// Hypi's metadata block on every record.
#[derive(SimpleObject, Clone)]
pub struct Hypi {
    pub id: ID,
    #[graphql(name = "impl")]
    pub implementation: Option<String>,
    pub created: Option<String>,
    pub updated: Option<String>,
    pub trashed: Option<String>,
    pub created_by: Option<ID>,
    pub instance_id: Option<String>,
}

pub(super) fn file_hypi(f: &FileRecord) -> Hypi {
    Hypi {
        id: ID(f.id.to_string()),
        implementation: None,
        created: Some(rfc3339(f.created)),
        updated: Some(rfc3339(f.updated)),
        trashed: f.trashed.map(rfc3339),
        created_by: Some(ID(f.created_by.0.clone())),
        instance_id: Some(f.instance.to_string()),
    }
}

/// Where a file downloads from.
#[derive(SimpleObject, Clone)]
#[graphql(name = "URL")]
pub struct Url {
    pub path: String,
    pub query_params: Option<Json<serde_json::Value>>,
    pub port: Option<i32>,
    pub host: Option<String>,
}

/// Hypi's file states; depot's stored files are always UPLOADED.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum FileStatus {
    Uploaded,
    Processing,
    PendingApproval,
    Disabled,
    Available,
    Deleted,
    Unavailable,
}

/// A File record.
pub struct File(pub FileRecord);

#[Object]
impl File {
    async fn hypi(&self) -> Hypi {
        file_hypi(&self.0)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn directory(&self) -> &str {
        &self.0.directory
    }
    async fn path(&self) -> String {
        self.0.path()
    }
    async fn is_directory(&self) -> bool {
        self.0.is_directory()
    }
    async fn status(&self) -> FileStatus {
        FileStatus::Uploaded
    }
    async fn url(&self) -> Url {
        Url {
            path: self.0.url_path(),
            query_params: None,
            port: None,
            host: None,
        }
    }
    #[graphql(name = "type")]
    async fn media_type(&self) -> &str {
        &self.0.mime
    }
    /// Size in bytes (Hypi's Long).
    async fn size(&self) -> i64 {
        i64::try_from(self.0.size).unwrap_or(i64::MAX)
    }
    async fn extension(&self) -> Option<&str> {
        self.0.extension.as_deref()
    }
    /// Whether the caller starred it (each account's own mark); null without a token.
    async fn is_stared(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<bool>> {
        if self.0.is_stared.is_some() {
            return Ok(self.0.is_stared);
        }
        let (svc, q) = super::parts(ctx)?;
        let (svc, f) = (svc.clone(), self.0.clone());
        let f = crate::service::blocking(move || svc.for_caller(&q.caller, f))
            .await
            .map_err(super::gql)?;
        Ok(f.is_stared)
    }
    async fn is_sharable(&self) -> Option<bool> {
        self.0.is_sharable
    }
    /// The text of a text file up to `max_content_bytes`; null otherwise.
    async fn content(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let (svc, _) = super::parts(ctx)?;
        svc.text_content(&self.0).await.map_err(super::gql)
    }
    /// A directory's direct entries the caller may see, filtered, sorted and paged like
    /// `find` (through the directory index); null for a file.
    #[graphql(
        complexity = "super::find_cost(first, None, arcql.as_deref().unwrap_or(\"*\"), child_complexity)"
    )]
    async fn children(
        &self,
        ctx: &Context<'_>,
        arcql: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<Vec<File>>> {
        if !self.0.is_directory() {
            return Ok(None);
        }
        let (svc, q) = super::parts(ctx)?;
        let _lane = super::lane(ctx).await;
        let found = svc
            .children(q, self.0.id, arcql, first, after)
            .await
            .map_err(super::gql)?;
        Ok(found.map(|f| f.nodes.into_iter().map(File).collect()))
    }
    async fn sha256(&self) -> String {
        self.0.sha256.to_hex()
    }
    async fn width(&self) -> Option<u32> {
        self.0.width
    }
    async fn height(&self) -> Option<u32> {
        self.0.height
    }
}

/// An Image record (shares its File's id).
pub struct Image(pub ImageRecord, pub FileRecord);

#[Object]
impl Image {
    async fn hypi(&self) -> Hypi {
        file_hypi(&self.1)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn file(&self) -> File {
        File(self.1.clone())
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn location(&self) -> Option<Json<serde_json::Value>> {
        self.0.location.clone().map(Json)
    }
    async fn width(&self) -> u32 {
        self.0.width
    }
    async fn height(&self) -> u32 {
        self.0.height
    }
}

/// Role-based or scope-based permission.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "UPPERCASE")]
pub enum AccessRightType {
    Rbp,
    Sbp,
}

impl From<PermissionType> for AccessRightType {
    fn from(p: PermissionType) -> Self {
        match p {
            PermissionType::RBP => AccessRightType::Rbp,
            PermissionType::SBP => AccessRightType::Sbp,
        }
    }
}

/// An account reference.
#[derive(SimpleObject, Clone)]
pub struct Account {
    pub hypi: Hypi,
}

/// A grant.
pub struct AccessRightObject {
    pub right: AccessRight,
}

#[Object(name = "AccessRight")]
impl AccessRightObject {
    async fn hypi(&self) -> Hypi {
        right_hypi(&self.right)
    }
    async fn resource(&self) -> &str {
        &self.right.resource
    }
    async fn resource_type(&self) -> &str {
        &self.right.resource_type
    }
    async fn fields(&self) -> Option<&str> {
        self.right.fields.as_deref()
    }
    async fn operation_type(&self) -> &str {
        &self.right.operation_type
    }
    async fn operation(&self) -> &str {
        &self.right.operation
    }
    async fn start_date(&self) -> Option<String> {
        self.right.start_date.map(rfc3339)
    }
    async fn end_date(&self) -> Option<String> {
        self.right.end_date.map(rfc3339)
    }
    async fn permission_type(&self) -> AccessRightType {
        self.right.permission_type.into()
    }
    async fn approved(&self) -> bool {
        self.right.approved
    }
    async fn members(&self) -> Vec<Account> {
        self.right
            .members
            .iter()
            .map(|m| Account { hypi: id_only(m) })
            .collect()
    }
}

/// The `Hypi` block of a grant.
pub fn right_hypi(r: &AccessRight) -> Hypi {
    Hypi {
        id: ID(r.id.to_string()),
        implementation: None,
        created: Some(rfc3339(r.created)),
        updated: Some(rfc3339(r.updated)),
        trashed: None,
        created_by: Some(ID(r.created_by.0.clone())),
        instance_id: Some(r.instance.to_string()),
    }
}

/// A `Hypi` block carrying only an id.
pub fn id_only(id: &str) -> Hypi {
    Hypi {
        id: ID(id.to_string()),
        implementation: None,
        created: None,
        updated: None,
        trashed: None,
        created_by: None,
        instance_id: None,
    }
}

/// What `find` and `get` return.
#[derive(Union)]
pub enum HypiRootAggregate {
    File(File),
    Image(Image),
    AccessRight(AccessRightObject),
}

impl From<Node> for HypiRootAggregate {
    fn from(n: Node) -> Self {
        match n {
            Node::File(f) => HypiRootAggregate::File(File(f)),
            Node::Image(i, f) => HypiRootAggregate::Image(Image(i, f)),
            Node::AccessRight(r) => HypiRootAggregate::AccessRight(AccessRightObject { right: r }),
        }
    }
}

/// One result with its cursor.
#[derive(SimpleObject)]
pub struct HypiResultEdge {
    pub node: HypiRootAggregate,
    pub cursor: ID,
}

/// Where a page sits in the whole result.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_previous_page: bool,
    pub has_next_page: bool,
    pub start_cursor: Option<ID>,
    pub end_cursor: Option<ID>,
}

/// A page of `find` results.
#[derive(SimpleObject)]
pub struct HypiFilterConnection {
    pub edges: Vec<HypiResultEdge>,
    pub page_info: PageInfo,
}

/// The record types addressed by `type:`.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "PascalCase")]
pub enum HypiMutationType {
    File,
    Image,
    AccessRight,
}

/// `{hypi: {id, impl}}` in inputs.
#[derive(InputObject, Clone)]
pub struct HypiInput {
    pub id: Option<ID>,
    #[graphql(name = "impl")]
    pub implementation: Option<String>,
}

/// A reference to an account: `{hypi: {id: "anonymous"}}`.
#[derive(InputObject, Clone)]
pub struct AccountInput {
    pub hypi: HypiInput,
}

/// An AccessRight to create.
#[derive(InputObject, Clone)]
pub struct AccessRightInput {
    pub hypi: Option<HypiInput>,
    pub resource: String,
    pub resource_type: String,
    pub fields: Option<String>,
    pub operation_type: String,
    pub operation: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub permission_type: AccessRightType,
    pub approved: Option<bool>,
    pub members: Vec<AccountInput>,
}

/// Legacy (pre-2022) permission strategy; accepted and ignored beyond validation.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "PascalCase")]
pub enum DecisionStrategy {
    Unanimous,
    Affirmative,
    Consensus,
}

/// Legacy operation type.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "PascalCase")]
pub enum OperationType {
    Query,
    Mutation,
}

/// Legacy policy logic.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(rename_items = "PascalCase")]
pub enum Logic {
    Positive,
    Negative,
}

/// Legacy policy (`hypi: {impl: "AccountPolicy"}`).
#[derive(InputObject, Clone)]
pub struct PolicyInput {
    pub hypi: Option<HypiInput>,
    pub name: Option<String>,
    pub logic: Option<Logic>,
    pub accounts: Option<Vec<AccountInput>>,
}

/// Legacy Permission: translated into AccessRights with the same effect.
#[derive(InputObject, Clone)]
pub struct PermissionInput {
    pub hypi: Option<HypiInput>,
    pub name: Option<String>,
    pub decision_strategy: Option<DecisionStrategy>,
    #[graphql(name = "type")]
    pub resource_type: Option<String>,
    pub resource: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub operation_type: Option<OperationType>,
    pub operations: Option<Vec<String>>,
    pub include_all_accounts: Option<bool>,
    pub policies: Option<Vec<PolicyInput>>,
}

/// A File to create or change through `upsert`: with `hypi.id`, an existing file is moved or
/// renamed (`directory`, `name`), starred by the caller (`isStared`) or made (un)sharable
/// (`isSharable`); without, a directory is created (`isDirectory: true`) or a text file
/// (`content`).
#[derive(InputObject, Clone)]
pub struct FileInput {
    pub hypi: Option<HypiInput>,
    pub name: Option<String>,
    pub directory: Option<String>,
    pub is_directory: Option<bool>,
    pub is_stared: Option<bool>,
    pub is_sharable: Option<bool>,
    pub content: Option<String>,
}

impl From<FileInput> for crate::service::dirs::FileChange {
    fn from(f: FileInput) -> Self {
        crate::service::dirs::FileChange {
            id: f.hypi.and_then(|h| h.id).map(|i| i.0),
            name: f.name,
            directory: f.directory,
            is_directory: f.is_directory,
            is_stared: f.is_stared,
            is_sharable: f.is_sharable,
            content: f.content,
        }
    }
}

/// What a move does when the target path is taken.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ConflictPolicy {
    Fail,
    Rename,
    Replace,
}

impl From<ConflictPolicy> for crate::service::dirs::OnConflict {
    fn from(c: ConflictPolicy) -> Self {
        use crate::service::dirs::OnConflict as O;
        match c {
            ConflictPolicy::Fail => O::Fail,
            ConflictPolicy::Rename => O::Rename,
            ConflictPolicy::Replace => O::Replace,
        }
    }
}

/// `upsert(values: {...})`.
#[derive(InputObject)]
pub struct HypiUpsertInputUnion {
    #[graphql(name = "File")]
    pub file: Option<Vec<FileInput>>,
    #[graphql(name = "AccessRight")]
    pub access_right: Option<Vec<AccessRightInput>>,
    #[graphql(name = "Permission")]
    pub permission: Option<Vec<PermissionInput>>,
}

#[cfg(test)]
mod tests {
    use crate::service::query::fields::FILE_FIELDS;
    use std::collections::BTreeSet;

    /// Field names of one type in the SDL.
    fn fields_of(sdl: &str, ty: &str) -> BTreeSet<String> {
        let start = sdl
            .find(&format!("type {ty} {{"))
            .unwrap_or_else(|| panic!("no type {ty} in the schema"));
        let body = &sdl[start..];
        let body = &body[body.find('{').unwrap_or(0) + 1..body.find('}').unwrap_or(body.len())];
        body.lines()
            .map(str::trim)
            // Skip doc strings: a field line starts with its name.
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
            .filter_map(|l| l.split([':', '(']).next())
            .map(str::trim)
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_string)
            .collect()
    }

    /// The GraphQL File type and the one File field table name the same fields, so neither
    /// drifts from the REST view and ArcQL, which are built from the table.
    #[test]
    fn graphql_file_matches_the_field_table() {
        let sdl = async_graphql::Schema::build(
            super::super::QueryRoot,
            super::super::MutationRoot,
            async_graphql::EmptySubscription,
        )
        .finish()
        .sdl();
        let top: BTreeSet<String> = FILE_FIELDS
            .iter()
            .map(|f| f.path.split('.').next().unwrap_or(f.path).to_string())
            .collect();
        assert_eq!(fields_of(&sdl, "File"), top);
        let hypi: BTreeSet<String> = FILE_FIELDS
            .iter()
            .filter_map(|f| f.path.strip_prefix("hypi."))
            .map(str::to_string)
            .collect();
        let mut graphql_hypi = fields_of(&sdl, "Hypi");
        graphql_hypi.remove("impl"); // Hypi's implementation name: not a File field
        assert_eq!(graphql_hypi, hypi);
        let url: BTreeSet<String> = FILE_FIELDS
            .iter()
            .filter_map(|f| f.path.strip_prefix("url."))
            .map(str::to_string)
            .collect();
        assert!(url.is_subset(&fields_of(&sdl, "URL")));
    }
}
