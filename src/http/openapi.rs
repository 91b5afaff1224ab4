//! The OpenAPI 3.1 document of the REST surface, generated from the code by utoipa and served at
//! `GET /openapi.json` (tokenless; built once, then the same bytes for every request).
//!
//! # How a route is documented (follow this for every new route)
//!
//! 1. Register the route in [`super::configure`] and add `(method, path)` to [`super::ROUTES`]
//!    beside it, with the path in OpenAPI's spelling (`/files/{id}`; an actix tail such as
//!    `{tail:.*}` becomes one named parameter). The unit test `routes_list_matches_the_router`
//!    (http/mod.rs) fails while `configure` registers a path that `ROUTES` lacks.
//! 2. Put `#[utoipa::path(...)]` on the handler: method, path, `tag`, `params(...)` (path,
//!    query via `IntoParams`, headers), `request_body`, and `responses(...)` listing **every**
//!    status the handler answers. An error status needs only a description:
//!    [`ErrorBodies`] gives every 4xx/5xx response without content the one error schema
//!    ([`ErrorBody`], `{"error":{"code","message"}}`), and adds the statuses any route can answer
//!    ([`COMMON_ERRORS`]: body limits, rate limits, our own failures). Routes that answer errors
//!    in another shape (S3's XML on the multipart URLs) give their content explicitly.
//!    `security(...)`: leave it out for token routes (the document's default: bearer JWT plus
//!    `hypi-domain`), `security(())` for tokenless routes, `security((), ("bearer" = []))` for
//!    routes where a token is optional (anonymous grants).
//! 3. List the handler in [`ApiDoc`]'s `paths(...)` and any new body or answer type (derive
//!    [`utoipa::ToSchema`]; answer shapes built with `json!` get a schema-only struct here) in
//!    `components(schemas(...))`. One handler serving two paths (an alias, another method) gets
//!    a doc-only function here ([`aliases`]).
//! 4. Routes under `/instances/{domain}` take [`DomainParam`] (and [`AccountParam`]): their
//!    examples are what scripts/openapi-check seeds, so schemathesis reaches real answers. An
//!    upload route whose answers carry the quota headers goes into [`QUOTA_HEADER_ROUTES`].
//!
//! tests/openapi.rs checks the served document lists every `ROUTES` entry, and
//! `scripts/openapi-check` validates the document and runs schemathesis against a live server
//! (no 500s, statuses and JSON bodies as documented).

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes as ByteBuf;
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// Statuses any route may answer, whatever it does: a body over the cap or too slow (413, 408,
/// from the body guard), the per-address rate limit (429), a full store (507), an unavailable
/// backing store (503) and our own failures (500).
pub const COMMON_ERRORS: &[(u16, &str)] = &[
    (408, "The request body was too slow or stalled"),
    (413, "The request body is larger than allowed"),
    (429, "Too many requests from this caller; retry later"),
    (500, "An internal failure (the log has the cause)"),
    (503, "A backing store is unavailable; retry later"),
    (507, "Not enough storage"),
];

/// The operations whose answers carry what the quotas leave (`http::quota::allowance_headers`):
/// the upload's success, and its 413/429 when a quota refused it.
pub const QUOTA_HEADER_ROUTES: &[(&str, &str)] =
    &[("post", "/upload"), ("post", "/upload/{directory}")];

/// The quota headers (IETF RateLimit draft, structured fields), by name, with what they hold.
const QUOTA_HEADERS: &[(&str, &str)] = &[
    (
        "RateLimit-Policy",
        "The quotas that apply, when any does: `\"account-bytes\";q=1000, \
         \"account-upload-day\";q=500;w=86400` (q: the limit, bytes or files; w: its window, \
         seconds)",
    ),
    (
        "RateLimit",
        "What they leave: `\"account-bytes\";r=400, \"account-upload-day\";r=100;t=3600` \
         (r: remaining; t: seconds until a daily limit starts over)",
    ),
];

/// The JSON error answer of every route (but S3's XML on the signed multipart URLs).
#[derive(ToSchema)]
#[allow(dead_code)] // Schema only: http/error.rs builds the body.
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What failed.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable machine-readable code from the catalogue (`NOT_FOUND`, `FILE_TOO_LARGE`, ...).
    code: String,
    /// Human-readable text.
    message: String,
    /// The request's id, as in the `X-Request-Id` header and the log.
    request_id: Option<String>,
}

/// Raw bytes: a file's content, a part, a body of a PUT.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Bytes(Vec<u8>);

/// Hypi's system fields of a record.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct HypiMeta {
    id: String,
    /// RFC 3339.
    created: String,
    /// RFC 3339.
    updated: String,
    created_by: String,
    instance_id: String,
}

/// A File's URL: Hypi's path (and, on `GET /files/{id}`, the absolute URL as `href`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FileUrl {
    /// The download path, `/file/<instanceId>-<fileId>.<ext>`.
    path: String,
    href: Option<String>,
}

/// A File (or a directory) in Hypi's shape, plus depot's `sha256`, `width` and `height`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct File {
    #[serde(rename = "__typename")]
    typename: String,
    hypi: HypiMeta,
    name: String,
    directory: String,
    path: String,
    #[serde(rename = "isDirectory")]
    is_directory: bool,
    status: String,
    url: FileUrl,
    /// The media type.
    #[serde(rename = "type")]
    mime: String,
    size: u64,
    extension: Option<String>,
    #[serde(rename = "isStared")]
    is_stared: Option<bool>,
    #[serde(rename = "isSharable")]
    is_sharable: Option<bool>,
    /// Text content of small text files; null otherwise.
    content: Option<String>,
    #[schema(value_type = Option<Object>)]
    children: Option<()>,
    sha256: String,
    width: Option<u32>,
    height: Option<u32>,
}

/// An Image record (images only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Image {
    #[serde(rename = "__typename")]
    typename: String,
    name: Option<String>,
    description: Option<String>,
    location: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    /// `{hypi: {id}}` of the File.
    #[schema(value_type = Object)]
    file: (),
}

/// A File with Hypi's fields, its Image, and Foir's fields beside them (`GET /files/{id}`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct FileDetail {
    #[serde(flatten)]
    file: File,
    image: Option<Image>,
    #[serde(flatten)]
    foir: FoirFields,
}

/// Foir's fields of a File.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct FoirFields {
    id: String,
    filename: String,
    mime_type: String,
    size: u64,
    width: Option<u32>,
    height: Option<u32>,
    blurhash: Option<String>,
    alt: Option<String>,
    /// RFC 3339.
    created_at: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<()>,
}

/// A File in Foir's shape (`confirm`, `GET /files/{id}?shape=foir`): Hypi's fields too, with
/// `url` the absolute URL and Hypi's path as `urlPath`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct FoirFile {
    #[serde(rename = "__typename")]
    typename: String,
    hypi: HypiMeta,
    id: String,
    filename: String,
    mime_type: String,
    size: u64,
    /// The absolute download URL.
    url: String,
    url_path: String,
    width: Option<u32>,
    height: Option<u32>,
    blurhash: Option<String>,
    alt: Option<String>,
    created_at: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<()>,
}

/// `GET /files/{id}`: Hypi's fields with Foir's beside them, or Foir's shape (`shape=foir`).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum FileRecordView {
    Hypi(Box<FileDetail>),
    Foir(Box<FoirFile>),
}

/// An edge of a page.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FileEdge {
    node: File,
    cursor: String,
}

/// Where a page ends.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

/// A page of files in the connection shape GraphQL clients know.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct FilePage {
    edges: Vec<FileEdge>,
    page_info: PageInfo,
}

/// Totals of a directory's subtree.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DirStats {
    files: u64,
    directories: u64,
    bytes: u64,
}

/// A directory, its totals and a page of its entries.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DirListing {
    directory: File,
    stats: DirStats,
    children: FilePage,
}

/// The files an upload stored, keyed by their stored names.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Uploaded(std::collections::HashMap<String, File>);

/// A multipart form with one or more files (any field names).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm(std::collections::HashMap<String, Bytes>);

/// A member of a grant: an account id, or `anonymous`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MemberRef {
    hypi: IdRef,
}

/// `{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct IdRef {
    id: String,
}

/// An AccessRight (grant) as Hypi shapes it.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AccessRight {
    #[serde(rename = "__typename")]
    typename: String,
    hypi: HypiMeta,
    resource: String,
    resource_type: String,
    fields: Option<String>,
    operation_type: String,
    operation: String,
    start_date: Option<String>,
    end_date: Option<String>,
    /// `RBAC`, `ABAC` or `CLIENT_SCOPE`.
    permission_type: String,
    approved: bool,
    members: Vec<MemberRef>,
}

/// A new grant (Hypi's `AccessRight` input).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AccessRightInput {
    /// Optional client-chosen id.
    hypi: Option<IdRef>,
    /// The file's id (or `*`-free resource name).
    resource: String,
    resource_type: String,
    fields: Option<String>,
    operation_type: String,
    operation: String,
    start_date: Option<String>,
    end_date: Option<String>,
    permission_type: String,
    approved: Option<bool>,
    /// One member or a list.
    #[schema(value_type = Vec<MemberRef>)]
    members: (),
}

/// One grant or several.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AccessRightsInput {
    One(Box<AccessRightInput>),
    Many(Vec<AccessRightInput>),
}

/// One grant (object body) or several (array body), as created.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AccessRightsCreated {
    One(Box<AccessRight>),
    Many(Vec<AccessRight>),
}

/// An instance's public settings.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct Instance {
    id: String,
    domain: String,
    anonymous_requests: bool,
    created: String,
    updated: String,
}

/// A presigned upload: the id to confirm and the URL to PUT the bytes to.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct PresignedUpload {
    upload_id: String,
    upload_url: String,
}

/// A stored PUT (its SHA-256 is the ETag header).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct StoredPut {
    upload_id: String,
    size: Option<u64>,
    mime_type: Option<String>,
}

/// A temp file's two signed URLs.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct TempUrls {
    upload_url: String,
    download_url: String,
}

/// A multipart temp file's signed URLs and part sizes.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MultipartUrls {
    upload_part_urls: Vec<String>,
    complete_url: String,
    download_url: String,
    min_part_size: u64,
    max_part_size: u64,
}

/// A signed download link.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct Link {
    id: String,
    file_id: Option<String>,
    url: String,
    expires_at: String,
}

/// `GET /health`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    status: String,
}

/// `GET /ready`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    status: String,
    #[schema(value_type = Object)]
    checks: (),
}

/// Presigned POST form of a pending asset.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AssetPostData {
    url: String,
    date: String,
    key: String,
    signature: String,
    algorithm: String,
    policy: String,
    credential: String,
    security_token: String,
}

/// Where an asset's upload is.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AssetUpload {
    /// `ASSET_CREATE_PENDING`, `ASSET_UPLOAD_COMPLETE` or `ASSET_ERROR_UPLOAD`.
    status: String,
    expires_at: Option<String>,
    error: Option<String>,
    request_post_data: Option<AssetPostData>,
}

/// A Hygraph asset.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct Asset {
    id: String,
    file_name: String,
    url: String,
    mime_type: Option<String>,
    size: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    handle: Option<String>,
    created_at: String,
    updated_at: String,
    upload: AssetUpload,
}

/// `POST /assets`: exactly one of `fileName` (upload by form) and `uploadUrl` (fetched).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AssetCreateInput {
    file_name: Option<String>,
    upload_url: Option<String>,
}

/// `POST /assets/{id}/reupload`: exactly one of `reUpload: true` and `uploadUrl`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AssetUpdateInput {
    re_upload: Option<bool>,
    upload_url: Option<String>,
}

/// The presigned POST form: the policy fields, then `file` last.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AssetForm {
    key: String,
    policy: String,
    #[serde(rename = "X-Amz-Signature")]
    signature: String,
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Any JSON value (GraphQL requests and answers).
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct AnyJson(());

/// Quota limits of one scope (service/usage.rs `limits_json`): `null` is no limit. As a body,
/// a field left out is `null`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct QuotaLimits {
    /// Bytes stored (files and their variants).
    max_bytes: Option<u64>,
    /// Files stored.
    max_files: Option<u64>,
    /// Bytes uploaded per UTC day.
    max_upload_bytes_per_day: Option<u64>,
}

/// The limits that apply to an instance and to its accounts (stored, else the config's).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct EffectiveQuotas {
    instance: QuotaLimits,
    account_default: QuotaLimits,
}

/// An instance's quota settings: what is stored, and what applies.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct QuotaSettings {
    instance: QuotaLimits,
    account_default: QuotaLimits,
    effective: EffectiveQuotas,
}

/// `PUT /instances/{domain}/quotas`: each scope given replaces its stored limits.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct QuotaSettingsInput {
    // Either may be left out (that scope is unchanged), but not `null`.
    #[schema(required = false)]
    instance: QuotaLimits,
    #[schema(required = false)]
    account_default: QuotaLimits,
}

/// One account's own limits and the limits that apply to it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AccountQuota {
    account: String,
    limits: QuotaLimits,
    effective: QuotaLimits,
}

/// Usage counters.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UsageCounters {
    /// Bytes of the files.
    bytes: u64,
    files: u64,
    /// Bytes of stored variants (image transforms).
    variant_bytes: u64,
    /// `bytes + variantBytes`.
    stored_bytes: u64,
    /// Bytes uploaded since the UTC day began.
    upload_bytes_today: u64,
}

/// One account's usage and the limits that apply to it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AccountUsage {
    account: String,
    usage: UsageCounters,
    limits: QuotaLimits,
}

/// An instance's usage and the limits that apply to it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InstanceUsage {
    domain: String,
    usage: UsageCounters,
    limits: QuotaLimits,
}

/// An instance's usage with a page of its accounts.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct InstanceUsagePage {
    instance: InstanceUsage,
    accounts: Vec<AccountUsage>,
    has_more: bool,
    /// The `after` of the next page; `null` on the last.
    next: Option<String>,
}

/// `GET /instances/{domain}/usage`: one account's (`account`, or a non-admin caller), or the
/// instance's with a page of accounts (admins).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum UsageReport {
    Account(AccountUsage),
    Instance(InstanceUsagePage),
}

/// The instance a route is about (`/instances/{domain}/...`): the caller's own. The example
/// is the instance scripts/openapi-check seeds, so schemathesis reaches the answers too.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct DomainParam {
    /// The instance's domain.
    #[param(example = "acme.test")]
    domain: String,
}

/// An account of the instance (`.../accounts/{account}/...`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct AccountParam {
    /// The account's id (1 to 512 bytes).
    #[param(example = "alice", max_length = 512)]
    account: String,
}

/// The signature of a signed URL: its query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Signature {
    /// Expiry, Unix seconds (signed).
    expires: u64,
    /// The URL's signature.
    sig: String,
}

/// The errors of the signed multipart URLs: S3's XML (`<Error><Code>..`), each status with the
/// S3 codes it carries (temp_multipart.rs `s3_code`).
pub struct S3Errors;

impl utoipa::IntoResponses for S3Errors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        const S3: &[(u16, &str)] = &[
            (
                400,
                "MalformedXML, InvalidPart, EntityTooLarge, InvalidRequest, ...",
            ),
            (403, "SignatureDoesNotMatch"),
            (404, "NoSuchUpload"),
            (409, "OperationAborted"),
            (500, "InternalError"),
            (503, "SlowDown, ServiceUnavailable"),
            (507, "InsufficientStorage"),
        ];
        S3.iter()
            .map(|(status, codes)| {
                let xml = ContentBuilder::new()
                    .schema(Some(<String as utoipa::PartialSchema>::schema()))
                    .build();
                let response = ResponseBuilder::new()
                    .description(format!("S3's error XML ({codes})"))
                    .content("application/xml", xml)
                    .build();
                (status.to_string(), RefOr::T(response))
            })
            .collect()
    }
}

/// Fills in what every operation shares: the error body on every error response without
/// content, the [`COMMON_ERRORS`], and the security schemes.
pub struct ErrorBodies;

impl Modify for ErrorBodies {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT from `depot token` (or the configured identity provider); \
                         `Authorization` also takes the bare token, as Hypi sends it.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "hypiDomain",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "hypi-domain",
                "The instance (domain) the request is for; defaults to the token's.",
            ))),
        );
        let error = ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                // Handler names repeat across modules (`create`, `get`): ids come from the
                // method and path instead, which are unique by construction.
                op.operation_id = Some(operation_id(method, path));
                for (status, description) in COMMON_ERRORS {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            RefOr::T(ResponseBuilder::new().description(*description).build())
                        });
                }
                let quota_headers = QUOTA_HEADER_ROUTES.contains(&(method, path.as_str()));
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if quota_headers && ["200", "413", "429"].contains(&status.as_str()) {
                        for (name, description) in QUOTA_HEADERS {
                            let header =
                                HeaderBuilder::new().description(Some(*description)).build();
                            response.headers.insert(name.to_string(), header);
                        }
                    }
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if is_error && response.content.is_empty() {
                        response
                            .content
                            .insert("application/json".into(), error.clone());
                    }
                }
            }
        }
    }
}

/// Every operation of a path item, with its method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("options", item.options.as_mut()),
        ("head", item.head.as_mut()),
        ("patch", item.patch.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

/// `get` + `/files/{id}/links` -> `getFilesIdLinks`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for word in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

/// Doc-only operations: paths and methods served by a handler already documented elsewhere.
/// Never called (utoipa reads only the attribute).
#[allow(dead_code)]
pub mod aliases {
    use super::*;

    /// Stores files in a directory; as `POST /upload`, with the directory in the path.
    #[utoipa::path(
        post, path = "/upload/{directory}", tag = "files",
        params(("directory" = String, Path, description = "Directory to store the files in (created as needed)")),
        request_body(content = UploadForm, content_type = "multipart/form-data"),
        responses(
            (status = 200, description = "The stored files, keyed by stored name", body = Uploaded),
            (status = 400, description = "Not a multipart form, no file, or a bad directory"),
            (status = 401, description = "No or bad token"),
            (status = 403, description = "The token may not write to this instance"),
            (status = 413, description = "A file larger than an account or instance quota allows (`FILE_TOO_LARGE`), or the body over the cap"),
            (status = 429, description = "A quota has no room left (`QUOTA_EXCEEDED`), or too many requests"),
        ),
    )]
    pub fn upload_into() {}

    /// Creates a directory; as `POST /dirs/{path}` for the root.
    #[utoipa::path(
        post, path = "/dirs", tag = "directories",
        responses(
            (status = 200, description = "The root directory", body = File),
            (status = 201, description = "Created", body = File),
            (status = 400, description = "Bad path"),
            (status = 401, description = "No or bad token"),
            (status = 403, description = "Not allowed"),
            (status = 409, description = "A file has that name"),
        ),
    )]
    pub fn create_root() {}

    /// The root directory's listing; as `GET /dirs/{path}`.
    #[utoipa::path(
        get, path = "/dirs", tag = "directories",
        params(super::super::dirs::ListQuery),
        security((), ("bearer" = [], "hypiDomain" = [])),
        responses(
            (status = 200, description = "The directory, totals, a page of entries", body = DirListing),
            (status = 400, description = "Bad query"),
            (status = 401, description = "Bad token"),
            (status = 403, description = "Not allowed"),
            (status = 404, description = "No such directory"),
        ),
    )]
    pub fn list_root() {}

    /// A temp file's headers (HEAD of its download URL).
    #[utoipa::path(
        head, path = "/temp-files/{instance}/{id}", tag = "temp files",
        params(
            ("instance" = String, Path), ("id" = String, Path),
            Signature,
        ),
        security(()),
        responses(
            (status = 200, description = "The temp file's headers"),
            (status = 304, description = "Not modified"),
            (status = 403, description = "Bad signature"),
            (status = 404, description = "No such temp file (or not uploaded yet)"),
            (status = 410, description = "The URL has expired"),
            (status = 412, description = "A precondition failed"),
        ),
    )]
    pub fn head_temp() {}

    /// A signed link's headers.
    #[utoipa::path(
        head, path = "/links/{instance}/{id}", tag = "links",
        params(
            ("instance" = String, Path), ("id" = String, Path),
            Signature,
        ),
        security(()),
        responses(
            (status = 200, description = "The linked file's headers"),
            (status = 304, description = "Not modified"),
            (status = 403, description = "Bad signature"),
            (status = 404, description = "No such link or file"),
            (status = 410, description = "The link has expired"),
            (status = 412, description = "A precondition failed"),
        ),
    )]
    pub fn head_link() {}

    /// A file's headers (HEAD of a download).
    #[utoipa::path(
        head, path = "/file/{name}", tag = "files",
        params(("name" = String, Path, description = "`<instanceId>-<fileId>.<ext>`")),
        security((), ("bearer" = [], "hypiDomain" = [])),
        responses(
            (status = 200, description = "The file's headers"),
            (status = 304, description = "Not modified"),
            (status = 400, description = "A bad transform"),
            (status = 401, description = "Bad token"),
            (status = 404, description = "No such file, or not visible to the caller"),
            (status = 412, description = "A precondition failed"),
        ),
    )]
    pub fn head_file() {}

    /// What the tus server speaks, on an upload's URL.
    #[utoipa::path(
        options, path = "/tus/{id}", tag = "tus",
        params(("id" = String, Path)),
        security(()),
        responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size headers")),
    )]
    pub fn tus_options_id() {}
}

/// The document: every documented operation and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "depot",
        description = "Self-hosted file upload and download service: Hypi's REST upload and \
                       download, Foir's presigned uploads, Amplience's temp files and S3 \
                       multipart, Hygraph's assets, tus 1.0. Errors are \
                       `{\"error\":{\"code\",\"message\"}}`.",
    ),
    paths(
        openapi_json,
        super::download::download,
        aliases::head_file,
        super::health::live,
        super::health::ready,
        super::metrics::scrape,
        super::graphql,
        super::graphiql::page,
        super::graphiql::asset,
        super::console::page,
        super::console::asset,
        super::upload::upload,
        aliases::upload_into,
        super::files::list,
        super::files::get,
        super::files::delete,
        super::dirs::create,
        super::dirs::get,
        aliases::create_root,
        aliases::list_root,
        super::dirs::move_entry,
        super::dirs::star,
        super::dirs::unstar,
        super::access::create,
        super::access::list,
        super::access::delete,
        super::access::put_instance,
        super::access::get_instance,
        super::quota::get_quotas,
        super::quota::put_quotas,
        super::quota::get_account_quota,
        super::quota::put_account_quota,
        super::quota::get_usage,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::redeliver,
        super::direct::create_upload,
        super::direct::put_upload,
        super::direct::confirm_upload,
        super::direct::create_temp,
        super::temp_multipart::create,
        super::temp_multipart::put_part,
        super::temp_multipart::complete,
        super::direct::put_temp,
        super::direct::get_temp,
        aliases::head_temp,
        super::direct::create_link,
        super::direct::delete_link,
        super::direct::get_link,
        aliases::head_link,
        super::assets::create_asset,
        super::assets::upload_form,
        super::assets::get_asset,
        super::assets::reupload_asset,
        super::assets::put_content,
        super::tus::create,
        super::tus::options,
        aliases::tus_options_id,
        super::tus::head,
        super::tus::get,
        super::tus::patch,
        super::tus::delete,
        super::tus::overridden,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ErrorBodies),
    security(("bearer" = [], "hypiDomain" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

/// The document as served: built and serialised once.
pub fn document() -> &'static ByteBuf {
    static DOC: OnceLock<ByteBuf> = OnceLock::new();
    DOC.get_or_init(|| {
        // Serialising our own derived types cannot fail; an empty object would fail the
        // validator loudly rather than take the server down.
        let json = ApiDoc::openapi().to_json().unwrap_or_else(|e| {
            tracing::error!("cannot serialise the OpenAPI document: {e}");
            "{}".to_string()
        });
        ByteBuf::from(json)
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = AnyJson)),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        // The document changes only with the binary.
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(document().clone())
}
