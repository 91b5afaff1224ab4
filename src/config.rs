//! One typed configuration, loaded once: the file, then `DEPOT_*` environment variables, then flags.

use crate::error::{Result, StartError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file read when no `--config` is given, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

/// Everything the service can be told. Field docs are mirrored in `config/default.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Where blobs, metadata and the generated signing key live.
    pub data_dir: PathBuf,
    /// Instance (domain) used when a request carries no `hypi-domain` header.
    pub default_instance: Option<String>,
    /// Largest accepted file part, in bytes.
    pub max_file_size: u64,
    /// Most parts (file or not) accepted in one multipart request.
    pub max_parts: usize,
    /// Largest multipart part header block (Content-Disposition etc.), in bytes.
    pub max_part_header_bytes: u64,
    /// Seconds a client may take to send its request head before it gets 408.
    pub header_timeout_secs: u64,
    /// Seconds any request body may stall (no bytes arriving) before it is aborted with 408.
    pub body_timeout_secs: u64,
    /// Least average rate, in bytes per second, at which every request body must arrive,
    /// measured over each `body_rate_window_secs` (the first window is the grace period); a body
    /// slower than that is aborted with 408. 0 turns the rate check off (the stall timeout stays).
    pub body_min_rate: u64,
    /// Seconds over which `body_min_rate` is averaged.
    pub body_rate_window_secs: u64,
    /// Largest request body on every route except uploads (JSON, GraphQL), in bytes; larger
    /// bodies get 413.
    pub max_body_bytes: u64,
    /// Most uploads one account may have in flight at once; more get 429.
    pub max_uploads_per_account: usize,
    /// Most uploads in flight at once over all accounts; more get 429.
    pub max_uploads: usize,
    /// Largest `first`/`last` a GraphQL `find` honours (Hypi caps at 25).
    pub max_page_size: usize,
    /// Largest text file whose bytes GraphQL returns in a File's `content`.
    pub max_content_bytes: u64,
    /// Most entries below a directory a non-admin may move, trash or delete in one call
    /// (422 TREE_TOO_LARGE beyond): bounds how long such a call holds the tree lock.
    pub max_tree_entries: usize,
    /// Most access rights one account may hold in an instance (429 beyond).
    pub max_grants_per_account: u64,
    /// Most access rights one request may create (413 beyond).
    pub max_grants_per_request: usize,
    /// Most work one GraphQL request may ask for, priced before it runs: each `find` costs
    /// its page size times (its selection plus its ArcQL filter's price, where a wildcard
    /// costs a unit per 64 pattern characters); other fields cost 1. Beyond it the request is
    /// refused with `extensions.code` `QUERY_TOO_COSTLY`.
    pub graphql_max_cost: usize,
    /// Milliseconds of work one GraphQL request may take; a `find` or mutation still walking
    /// records then stops with `REQUEST_TIMEOUT`.
    pub graphql_time_budget_ms: u64,
    /// Serve the GraphiQL explorer on `GET /graphql`, from files embedded in the binary (no
    /// third-party network); `false` leaves `POST /graphql` as the only GraphQL entry.
    pub graphiql: bool,
    /// Serve the web console on `GET /console`, from files embedded in the binary; `false`
    /// answers 404 there.
    pub console: bool,
    /// Answer GraphQL introspection (`__schema`, `__type`) for callers without a token.
    pub graphql_anonymous_introspection: bool,
    /// Worker threads for HTTP; 0 means one per core.
    pub workers: usize,
    /// Memory for small files (up to 64 KiB) their owners downloaded, served again without
    /// storage reads; 0 turns the cache off.
    pub download_cache_bytes: usize,
    /// Log filter, e.g. `info` or `depot=debug`.
    pub log: String,
    /// `text` (the default) or `json`: one JSON object per line, with the request's span
    /// (its `request_id`).
    pub log_format: String,
    /// Bearer token `GET /metrics` answers to; unset, `/metrics` is 404 on `listen`.
    pub metrics_token: Option<String>,
    /// A second address serving only `GET /metrics`, without a token (for a private network).
    pub metrics_listen: Option<String>,
    /// Seconds in-flight requests (uploads) may take to finish after SIGTERM/SIGINT; the rest
    /// are then aborted and leave nothing behind.
    pub shutdown_grace_secs: u64,
    /// Requests a minute one client IP may make to `POST /upload/**` and `POST /graphql`
    /// (a token bucket refilled evenly); more get 429. 0 = off.
    pub rate_limit_per_ip_per_minute: u32,
    /// The same per account (instance and token subject). 0 = off.
    pub rate_limit_per_account_per_minute: u32,
    /// Token verification.
    pub auth: AuthConfig,
    /// Where blob bytes live: the data dir (default) or an S3-compatible bucket.
    pub store: StoreConfig,
    /// Where metadata lives: sled in the data dir (default) or a shared PostgreSQL.
    pub meta: MetaConfig,
    /// Which web pages on other origins may call depot from a browser.
    pub cors: CorsConfig,
    /// Bounds and exceptions for fetches depot makes itself (remote URL ingest, webhooks).
    pub remote_fetch: RemoteFetchConfig,
    /// Upload sessions and signed URLs (Foir presigned PUT, Amplience temp files, links).
    pub sessions: SessionsConfig,
    /// tus 1.0 resumable uploads (`/tus/`).
    pub tus: TusConfig,
    /// Image transforms on download (`?w=320&h=240&fit=cover&format=webp`).
    pub transforms: TransformsConfig,
    /// Webhook deliveries (issue 15): timeouts, retries, bounds.
    pub webhooks: WebhooksConfig,
    /// Default quotas (issue 15); an admin overrides them per instance over the API.
    pub quotas: QuotasConfig,
}

/// Webhook deliveries: each event is retried with exponential backoff and jitter (from
/// `base_delay_ms`, doubling, at most `max_delay_secs`) until it is `max_age_secs` old, then
/// marked failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Seconds one delivery may take (connect, answer, the answer's first bytes).
    pub timeout_secs: u64,
    /// Seconds after its delivery was queued that an event stops being retried.
    pub max_age_secs: u64,
    /// The first retry's delay, in milliseconds.
    pub base_delay_ms: u64,
    /// The longest delay between two attempts, in seconds.
    pub max_delay_secs: u64,
    /// Webhooks one instance may have.
    pub max_per_instance: usize,
    /// Finished deliveries kept per webhook (the delivery log).
    pub log_size: usize,
    /// Deliveries in flight at once, overall.
    pub concurrency: usize,
    /// Milliseconds between looks at the outbox when nothing new was written (retries fall
    /// due; new events wake the worker at once).
    pub poll_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 10,
            max_age_secs: 24 * 60 * 60,
            base_delay_ms: 1000,
            max_delay_secs: 60 * 60,
            max_per_instance: 20,
            log_size: 100,
            concurrency: 8,
            poll_ms: 1000,
        }
    }
}

/// Default quotas: per instance (all accounts together) and per account. Absent = unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Bytes an instance may store (files and the image variants charged to its accounts).
    pub instance_max_bytes: Option<u64>,
    /// Files an instance may store.
    pub instance_max_files: Option<u64>,
    /// Bytes an instance may upload per UTC day.
    pub instance_max_upload_bytes_per_day: Option<u64>,
    /// Bytes one account may store.
    pub account_max_bytes: Option<u64>,
    /// Files one account may store.
    pub account_max_files: Option<u64>,
    /// Bytes one account may upload per UTC day.
    pub account_max_upload_bytes_per_day: Option<u64>,
}

impl QuotasConfig {
    /// The instance limits as configured.
    pub fn instance_limits(&self) -> crate::meta::QuotaLimits {
        crate::meta::QuotaLimits {
            max_bytes: self.instance_max_bytes,
            max_files: self.instance_max_files,
            max_upload_bytes_per_day: self.instance_max_upload_bytes_per_day,
        }
    }

    /// The account limits as configured.
    pub fn account_limits(&self) -> crate::meta::QuotaLimits {
        crate::meta::QuotaLimits {
            max_bytes: self.account_max_bytes,
            max_files: self.account_max_files,
            max_upload_bytes_per_day: self.account_max_upload_bytes_per_day,
        }
    }
}

/// tus 1.0 resumable uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TusConfig {
    /// Largest upload (`Tus-Max-Size`), in bytes; 0: `max_file_size`.
    pub max_size: u64,
    /// Seconds an upload may take from creation to its last byte (`Upload-Expires`); then it
    /// answers 410 and its bytes are swept.
    pub expiry_secs: u64,
}

impl Default for TusConfig {
    fn default() -> Self {
        Self {
            max_size: 0,
            expiry_secs: 24 * 60 * 60,
        }
    }
}

impl Config {
    /// The largest tus upload: `tus.max_size`, else `max_file_size`.
    pub fn tus_max_size(&self) -> u64 {
        match self.tus.max_size {
            0 => self.max_file_size,
            n => n,
        }
    }
}

/// Image transforms on download: which sizes and formats may be asked for (every allowed
/// combination is a variant that may be stored, so the lists bound the disk one image can
/// cost), and the bounds of one transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformsConfig {
    /// `false`: transform parameters are refused (400 INVALID_TRANSFORM).
    pub enabled: bool,
    /// Widths that may be asked for (`w`), in pixels.
    pub widths: Vec<u32>,
    /// Heights that may be asked for (`h`), in pixels.
    pub heights: Vec<u32>,
    /// Output formats that may be asked for: `jpeg`, `png`, `webp` (`avif` is not built in).
    pub formats: Vec<String>,
    /// JPEG qualities that may be asked for (`q`); each is another variant, so it is a list too.
    pub qualities: Vec<u8>,
    /// JPEG quality when `q` is not given (1-100).
    pub default_quality: u8,
    /// Largest source file transformed, in bytes.
    pub max_input_bytes: u64,
    /// Largest source canvas decoded, in pixels (width x height).
    pub max_input_pixels: u64,
    /// Seconds one transform may take, waiting for a decode lane included (then 408).
    pub timeout_secs: u64,
    /// New variants being computed or waited for at once, over all callers; 429 beyond.
    pub max_pending: usize,
}

impl Default for TransformsConfig {
    fn default() -> Self {
        let sizes = vec![
            64, 128, 160, 240, 320, 480, 640, 800, 1024, 1280, 1600, 1920,
        ];
        Self {
            enabled: true,
            widths: sizes.clone(),
            heights: sizes,
            formats: vec!["jpeg".into(), "png".into(), "webp".into()],
            qualities: vec![50, 60, 70, 80, 90],
            default_quality: 80,
            max_input_bytes: 64 * 1024 * 1024,
            max_input_pixels: 64 * 1000 * 1000,
            timeout_secs: 60,
            max_pending: 64,
        }
    }
}

/// Upload sessions and signed URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Base of the URLs handed out (`https://files.example.com`); unset: the request's own
    /// scheme and Host.
    pub public_url: Option<String>,
    /// Seconds a presigned upload URL (`createFileUpload`) stays valid.
    pub upload_url_ttl_secs: u64,
    /// Seconds a temp file (`createTempFileUploadUrl`) lives, its URLs with it.
    pub temp_file_ttl_secs: u64,
    /// Largest temp file, in bytes.
    pub temp_file_max_size: u64,
    /// Largest multipart temp file (`createTempFileMultipartUploadUrl`), in bytes.
    pub multipart_max_size: u64,
    /// Largest part of a multipart temp file, in bytes (`maxPartSize`; at least 5 MiB).
    pub multipart_max_part_size: u64,
    /// Longest `expiresIn` of a signed download link, in seconds.
    pub link_max_ttl_secs: u64,
    /// Open sessions one account may hold per kind (uploads, temp files, links); 429 beyond.
    pub max_open_per_account: u64,
    /// Sessions (of any kind) one account may create per minute; 429 beyond.
    pub max_created_per_minute: u32,
    /// Seconds between sweeps of expired sessions and their bytes.
    pub sweep_interval_secs: u64,
    /// Seconds `confirmFileUpload` waits for an image's blurhash (a decode lane included);
    /// beyond, the File is made without one. 0: never wait.
    pub decode_timeout_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            upload_url_ttl_secs: 15 * 60,
            temp_file_ttl_secs: 60 * 60,
            temp_file_max_size: 100 * 1000 * 1000,
            // Amplience's: files up to 2 GiB, parts up to 2 GiB.
            multipart_max_size: 2 << 30,
            multipart_max_part_size: 2 << 30,
            link_max_ttl_secs: 7 * 24 * 60 * 60,
            max_open_per_account: 1000,
            max_created_per_minute: 600,
            sweep_interval_secs: 60,
            decode_timeout_secs: 30,
        }
    }
}

/// Cross-origin (CORS) access; none by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`https://app.example`, `http://127.0.0.1:3000`) whose pages may call depot.
    /// `*` admits any origin, but only on routes that take no credentials (capability URLs,
    /// `/health`); routes that take a token need their origins listed.
    pub allowed_origins: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_secs: 600,
        }
    }
}

/// Outbound fetches: public addresses only unless allowed here, bounded in size and time.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteFetchConfig {
    /// Hosts (`name`, `name:port`, `10.0.0.5`, `[::1]:8080`) that may be fetched although they
    /// resolve to loopback, private, link-local or other non-public addresses.
    pub allow_hosts: Vec<String>,
    /// Largest body fetched, in bytes.
    pub max_bytes: u64,
    /// Seconds one fetch may take in all (redirects and body included).
    pub timeout_secs: u64,
    /// Seconds a fetch may wait for a connection or the next bytes.
    pub stall_secs: u64,
    /// Most redirects followed.
    pub max_redirects: usize,
    /// Remote URL ingests running at once, overall; more wait their turn.
    pub max_concurrent: usize,
    /// Remote URL ingests one account may have pending at once; 429 beyond.
    pub max_concurrent_per_account: usize,
    /// Seconds a DNS lookup may take (each runs on the blocking pool; at most
    /// `max_concurrent` at once).
    pub dns_timeout_secs: u64,
}

impl Default for RemoteFetchConfig {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            max_bytes: 2 * 1024 * 1024 * 1024,
            timeout_secs: 600,
            stall_secs: 30,
            max_redirects: 5,
            max_concurrent: 8,
            max_concurrent_per_account: 2,
            dns_timeout_secs: 5,
        }
    }
}

/// An origin as browsers send it in `Origin` (`scheme://host[:port]`, lower case, default port
/// left out), or `*`.
pub fn normalize_origin(raw: &str) -> Result<String, StartError> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(raw.into());
    }
    let bad = |why: &str| StartError::Config(format!("cors.allowed_origins: {raw:?} {why}"));
    let url =
        reqwest::Url::parse(raw).map_err(|_| bad("is not an origin (scheme://host[:port])"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || raw.ends_with('/')
    {
        return Err(bad("must be an origin only, without a path"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    Ok(url.origin().ascii_serialization())
}

/// How tokens are signed and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret. When unset, a random one is generated into `<data_dir>/jwt.secret`.
    pub hs256_secret: Option<String>,
    /// PEM file with an RSA public key: accept RS256 tokens from an external identity provider.
    pub rs256_public_key: Option<PathBuf>,
    /// PEM file with an EC P-256 public key: accept ES256 tokens from an external identity provider.
    pub es256_public_key: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Key (at least 32 characters) that signs upload and download URLs. When unset, a random
    /// one is generated into `<data_dir>/url.key`. Never the JWT secret.
    pub url_signing_key: Option<String>,
    /// Retired URL keys that still verify (rotation: move the old key here, set a new one).
    pub previous_url_signing_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            default_instance: None,
            max_file_size: 2 * 1024 * 1024 * 1024,
            max_parts: 100,
            max_part_header_bytes: 16 * 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            body_min_rate: 4096,
            body_rate_window_secs: 30,
            max_body_bytes: 1024 * 1024,
            max_uploads_per_account: 32,
            max_uploads: 512,
            max_page_size: 25,
            max_content_bytes: 64 * 1024,
            max_tree_entries: 100_000,
            max_grants_per_account: 10_000,
            max_grants_per_request: 1_000,
            graphql_max_cost: 20_000,
            graphql_time_budget_ms: 5_000,
            graphiql: true,
            console: true,
            graphql_anonymous_introspection: false,
            workers: 0,
            download_cache_bytes: 32 * 1024 * 1024,
            log: "info".into(),
            log_format: "text".into(),
            metrics_token: None,
            metrics_listen: None,
            shutdown_grace_secs: 30,
            rate_limit_per_ip_per_minute: 0,
            rate_limit_per_account_per_minute: 0,
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            remote_fetch: RemoteFetchConfig::default(),
            store: StoreConfig::default(),
            meta: MetaConfig::default(),
            sessions: SessionsConfig::default(),
            tus: TusConfig::default(),
            transforms: TransformsConfig::default(),
            webhooks: WebhooksConfig::default(),
            quotas: QuotasConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            rs256_public_key: None,
            es256_public_key: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            url_signing_key: None,
            previous_url_signing_keys: Vec::new(),
        }
    }
}

/// Which blob store holds the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `<data_dir>/blobs`.
    #[default]
    Local,
    /// An S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, R2).
    S3,
}

/// The `[store]` table. Its `Debug` form hides the secret.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Bucket name (required for `s3`; the bucket must exist).
    pub bucket: Option<String>,
    /// Endpoint URL for S3-compatible servers, e.g. `http://127.0.0.1:9000`; unset = AWS.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset).
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Accept a plain-HTTP endpoint.
    pub allow_http: bool,
    /// `GET /file/...` answers `303 See Other` to a short-lived presigned GET on the bucket
    /// (after every access check), so the bytes skip the node. `s3` only.
    pub redirect_downloads: bool,
    /// How long such a presigned GET stays valid, in seconds (default 300, at most 7 days).
    pub redirect_ttl_secs: Option<u64>,
    /// `local` only: blobs of at most this many bytes are kept inline in a sled database
    /// (`<data>/blobs/inline`), made durable by one group-committed fdatasync instead of a
    /// file's fsyncs (default 65536; 0 = every blob is a file; at most 262144).
    pub inline_max: Option<u64>,
}

/// How long a download redirect's presigned GET stays valid when unset.
pub const DEFAULT_REDIRECT_TTL_SECS: u64 = 300;

impl StoreConfig {
    /// The lifetime of a download redirect's presigned GET.
    pub fn redirect_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.redirect_ttl_secs.unwrap_or(DEFAULT_REDIRECT_TTL_SECS))
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("redirect_downloads", &self.redirect_downloads)
            .field("redirect_ttl_secs", &self.redirect_ttl_secs)
            .field("inline_max", &self.inline_max)
            .finish()
    }
}

/// Which metadata store holds the records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaKind {
    /// sled in `<data_dir>/meta`.
    #[default]
    Sled,
    /// A PostgreSQL database shared by every node.
    Postgres,
}

/// The `[meta]` table. Its `Debug` form hides the URL's password.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    pub kind: MetaKind,
    /// `postgres://user:password@host:port/db` (required for `postgres`).
    pub url: Option<String>,
    /// Connections per pool: a node holds up to four pools (queries, blob locks, tree locks,
    /// quota locks) plus one change-feed connection.
    pub pool_size: usize,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            kind: MetaKind::Sled,
            url: None,
            pool_size: 16,
        }
    }
}

impl MetaConfig {
    /// The URL with its password replaced, for logs and errors.
    pub fn redacted_url(&self) -> Option<String> {
        self.url.as_ref().map(|u| match url::Url::parse(u) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("redacted"));
                parsed.to_string()
            }
            Ok(parsed) => parsed.to_string(),
            Err(_) => "<redacted>".into(),
        })
    }
}

impl std::fmt::Debug for MetaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaConfig")
            .field("kind", &self.kind)
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the file (explicit, else `config/default.toml` when present), then the environment,
    /// then `flags`.
    pub fn load(flags: &Overrides) -> Result<Self, StartError> {
        let mut cfg = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        if let Some(l) = &flags.listen {
            cfg.listen = l.clone();
        }
        if let Some(d) = &flags.data_dir {
            cfg.data_dir = d.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path).map_err(|source| StartError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| StartError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Applies `DEPOT_*` variables, read through `get` so tests need not touch the process env.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), StartError> {
        fn num<T: std::str::FromStr>(key: &str, v: String) -> Result<T, StartError> {
            v.trim()
                .parse()
                .map_err(|_| StartError::Config(format!("{key} must be a number, got {v:?}")))
        }
        fn flag(key: &str, v: String) -> Result<bool, StartError> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(StartError::Config(format!(
                    "{key} must be true or false, got {v:?}"
                ))),
            }
        }
        let opt = |v: String| if v.is_empty() { None } else { Some(v) };
        if let Some(v) = get("DEPOT_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("DEPOT_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("DEPOT_DEFAULT_INSTANCE") {
            self.default_instance = opt(v);
        }
        if let Some(v) = get("DEPOT_MAX_FILE_SIZE") {
            self.max_file_size = num("DEPOT_MAX_FILE_SIZE", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_PARTS") {
            self.max_parts = num("DEPOT_MAX_PARTS", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_PART_HEADER_BYTES") {
            self.max_part_header_bytes = num("DEPOT_MAX_PART_HEADER_BYTES", v)?;
        }
        if let Some(v) = get("DEPOT_HEADER_TIMEOUT_SECS") {
            self.header_timeout_secs = num("DEPOT_HEADER_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_BODY_TIMEOUT_SECS") {
            self.body_timeout_secs = num("DEPOT_BODY_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_BODY_MIN_RATE") {
            self.body_min_rate = num("DEPOT_BODY_MIN_RATE", v)?;
        }
        if let Some(v) = get("DEPOT_BODY_RATE_WINDOW_SECS") {
            self.body_rate_window_secs = num("DEPOT_BODY_RATE_WINDOW_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_BODY_BYTES") {
            self.max_body_bytes = num("DEPOT_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_UPLOADS_PER_ACCOUNT") {
            self.max_uploads_per_account = num("DEPOT_MAX_UPLOADS_PER_ACCOUNT", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_UPLOADS") {
            self.max_uploads = num("DEPOT_MAX_UPLOADS", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_PAGE_SIZE") {
            self.max_page_size = num("DEPOT_MAX_PAGE_SIZE", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_CONTENT_BYTES") {
            self.max_content_bytes = num("DEPOT_MAX_CONTENT_BYTES", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_TREE_ENTRIES") {
            self.max_tree_entries = num("DEPOT_MAX_TREE_ENTRIES", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_GRANTS_PER_ACCOUNT") {
            self.max_grants_per_account = num("DEPOT_MAX_GRANTS_PER_ACCOUNT", v)?;
        }
        if let Some(v) = get("DEPOT_MAX_GRANTS_PER_REQUEST") {
            self.max_grants_per_request = num("DEPOT_MAX_GRANTS_PER_REQUEST", v)?;
        }
        if let Some(v) = get("DEPOT_GRAPHQL_MAX_COST") {
            self.graphql_max_cost = num("DEPOT_GRAPHQL_MAX_COST", v)?;
        }
        if let Some(v) = get("DEPOT_GRAPHQL_TIME_BUDGET_MS") {
            self.graphql_time_budget_ms = num("DEPOT_GRAPHQL_TIME_BUDGET_MS", v)?;
        }
        if let Some(v) = get("DEPOT_GRAPHIQL") {
            self.graphiql = flag("DEPOT_GRAPHIQL", v)?;
        }
        if let Some(v) = get("DEPOT_CONSOLE") {
            self.console = flag("DEPOT_CONSOLE", v)?;
        }
        if let Some(v) = get("DEPOT_GRAPHQL_ANONYMOUS_INTROSPECTION") {
            self.graphql_anonymous_introspection =
                flag("DEPOT_GRAPHQL_ANONYMOUS_INTROSPECTION", v)?;
        }
        if let Some(v) = get("DEPOT_WORKERS") {
            self.workers = num("DEPOT_WORKERS", v)?;
        }
        if let Some(v) = get("DEPOT_DOWNLOAD_CACHE_BYTES") {
            self.download_cache_bytes = num("DEPOT_DOWNLOAD_CACHE_BYTES", v)?;
        }
        if let Some(v) = get("DEPOT_LOG") {
            self.log = v;
        }
        if let Some(v) = get("DEPOT_LOG_FORMAT") {
            self.log_format = v;
        }
        if let Some(v) = get("DEPOT_METRICS_TOKEN") {
            self.metrics_token = opt(v);
        }
        if let Some(v) = get("DEPOT_METRICS_LISTEN") {
            self.metrics_listen = opt(v);
        }
        if let Some(v) = get("DEPOT_SHUTDOWN_GRACE_SECS") {
            self.shutdown_grace_secs = num("DEPOT_SHUTDOWN_GRACE_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_RATE_LIMIT_PER_IP_PER_MINUTE") {
            self.rate_limit_per_ip_per_minute = num("DEPOT_RATE_LIMIT_PER_IP_PER_MINUTE", v)?;
        }
        if let Some(v) = get("DEPOT_RATE_LIMIT_PER_ACCOUNT_PER_MINUTE") {
            self.rate_limit_per_account_per_minute =
                num("DEPOT_RATE_LIMIT_PER_ACCOUNT_PER_MINUTE", v)?;
        }
        if let Some(v) = get("DEPOT_JWT_SECRET") {
            self.auth.hs256_secret = opt(v);
        }
        if let Some(v) = get("DEPOT_JWT_RS256_PUBLIC_KEY") {
            self.auth.rs256_public_key = opt(v).map(PathBuf::from);
        }
        if let Some(v) = get("DEPOT_JWT_ES256_PUBLIC_KEY") {
            self.auth.es256_public_key = opt(v).map(PathBuf::from);
        }
        if let Some(v) = get("DEPOT_JWT_ISSUER") {
            self.auth.issuer = opt(v);
        }
        if let Some(v) = get("DEPOT_JWT_AUDIENCE") {
            self.auth.audience = opt(v);
        }
        if let Some(v) = get("DEPOT_JWT_LEEWAY_SECS") {
            self.auth.leeway_secs = num("DEPOT_JWT_LEEWAY_SECS", v)?;
        }
        // Lists: comma- or space-separated.
        let list = |v: String| -> Vec<String> {
            v.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(v) = get("DEPOT_CORS_ALLOWED_ORIGINS") {
            self.cors.allowed_origins = list(v);
        }
        if let Some(v) = get("DEPOT_CORS_MAX_AGE_SECS") {
            self.cors.max_age_secs = num("DEPOT_CORS_MAX_AGE_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_ALLOW_HOSTS") {
            self.remote_fetch.allow_hosts = list(v);
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_MAX_BYTES") {
            self.remote_fetch.max_bytes = num("DEPOT_REMOTE_FETCH_MAX_BYTES", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_TIMEOUT_SECS") {
            self.remote_fetch.timeout_secs = num("DEPOT_REMOTE_FETCH_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_STALL_SECS") {
            self.remote_fetch.stall_secs = num("DEPOT_REMOTE_FETCH_STALL_SECS", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_MAX_REDIRECTS") {
            self.remote_fetch.max_redirects = num("DEPOT_REMOTE_FETCH_MAX_REDIRECTS", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_MAX_CONCURRENT") {
            self.remote_fetch.max_concurrent = num("DEPOT_REMOTE_FETCH_MAX_CONCURRENT", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_MAX_CONCURRENT_PER_ACCOUNT") {
            self.remote_fetch.max_concurrent_per_account =
                num("DEPOT_REMOTE_FETCH_MAX_CONCURRENT_PER_ACCOUNT", v)?;
        }
        if let Some(v) = get("DEPOT_REMOTE_FETCH_DNS_TIMEOUT_SECS") {
            self.remote_fetch.dns_timeout_secs = num("DEPOT_REMOTE_FETCH_DNS_TIMEOUT_SECS", v)?;
        }
        // [store]
        if let Some(v) = get("DEPOT_STORE_KIND") {
            self.store.kind = match v.trim() {
                "local" => StoreKind::Local,
                "s3" => StoreKind::S3,
                _ => {
                    return Err(StartError::Config(format!(
                        "DEPOT_STORE_KIND must be local or s3, got {v:?}"
                    )))
                }
            };
        }
        for (key, slot) in [
            ("DEPOT_STORE_BUCKET", &mut self.store.bucket),
            ("DEPOT_STORE_ENDPOINT", &mut self.store.endpoint),
            ("DEPOT_STORE_REGION", &mut self.store.region),
            ("DEPOT_STORE_ACCESS_KEY_ID", &mut self.store.access_key_id),
            (
                "DEPOT_STORE_SECRET_ACCESS_KEY",
                &mut self.store.secret_access_key,
            ),
        ] {
            if let Some(v) = get(key) {
                *slot = opt(v);
            }
        }
        if let Some(v) = get("DEPOT_STORE_ALLOW_HTTP") {
            self.store.allow_http = flag("DEPOT_STORE_ALLOW_HTTP", v)?;
        }
        if let Some(v) = get("DEPOT_STORE_REDIRECT_DOWNLOADS") {
            self.store.redirect_downloads = flag("DEPOT_STORE_REDIRECT_DOWNLOADS", v)?;
        }
        if let Some(v) = get("DEPOT_STORE_REDIRECT_TTL_SECS") {
            self.store.redirect_ttl_secs = Some(num("DEPOT_STORE_REDIRECT_TTL_SECS", v)?);
        }
        if let Some(v) = get("DEPOT_STORE_INLINE_MAX") {
            self.store.inline_max = Some(num("DEPOT_STORE_INLINE_MAX", v)?);
        }
        // [meta]
        if let Some(v) = get("DEPOT_META_KIND") {
            self.meta.kind = match v.trim() {
                "sled" => MetaKind::Sled,
                "postgres" => MetaKind::Postgres,
                _ => {
                    return Err(StartError::Config(format!(
                        "DEPOT_META_KIND must be sled or postgres, got {v:?}"
                    )))
                }
            };
        }
        if let Some(v) = get("DEPOT_META_URL") {
            self.meta.url = opt(v);
        }
        if let Some(v) = get("DEPOT_META_POOL_SIZE") {
            self.meta.pool_size = num("DEPOT_META_POOL_SIZE", v)?;
        }
        if let Some(v) = get("DEPOT_URL_SIGNING_KEY") {
            self.auth.url_signing_key = opt(v);
        }
        // Upload sessions and signed URLs.
        let s = &mut self.sessions;
        if let Some(v) = get("DEPOT_PUBLIC_URL") {
            s.public_url = opt(v);
        }
        for (key, field) in [
            ("DEPOT_UPLOAD_URL_TTL_SECS", &mut s.upload_url_ttl_secs),
            ("DEPOT_TEMP_FILE_TTL_SECS", &mut s.temp_file_ttl_secs),
            ("DEPOT_TEMP_FILE_MAX_SIZE", &mut s.temp_file_max_size),
            ("DEPOT_MULTIPART_MAX_SIZE", &mut s.multipart_max_size),
            (
                "DEPOT_MULTIPART_MAX_PART_SIZE",
                &mut s.multipart_max_part_size,
            ),
            ("DEPOT_LINK_MAX_TTL_SECS", &mut s.link_max_ttl_secs),
            (
                "DEPOT_MAX_OPEN_SESSIONS_PER_ACCOUNT",
                &mut s.max_open_per_account,
            ),
            (
                "DEPOT_SESSION_SWEEP_INTERVAL_SECS",
                &mut s.sweep_interval_secs,
            ),
            ("DEPOT_DECODE_TIMEOUT_SECS", &mut s.decode_timeout_secs),
        ] {
            if let Some(v) = get(key) {
                *field = num(key, v)?;
            }
        }
        if let Some(v) = get("DEPOT_MAX_SESSIONS_PER_MINUTE") {
            s.max_created_per_minute = num("DEPOT_MAX_SESSIONS_PER_MINUTE", v)?;
        }
        // [tus]
        if let Some(v) = get("DEPOT_TUS_MAX_SIZE") {
            self.tus.max_size = num("DEPOT_TUS_MAX_SIZE", v)?;
        }
        if let Some(v) = get("DEPOT_TUS_EXPIRY_SECS") {
            self.tus.expiry_secs = num("DEPOT_TUS_EXPIRY_SECS", v)?;
        }
        // [webhooks]
        let w = &mut self.webhooks;
        for (key, field) in [
            ("DEPOT_WEBHOOKS_TIMEOUT_SECS", &mut w.timeout_secs),
            ("DEPOT_WEBHOOKS_MAX_AGE_SECS", &mut w.max_age_secs),
            ("DEPOT_WEBHOOKS_BASE_DELAY_MS", &mut w.base_delay_ms),
            ("DEPOT_WEBHOOKS_MAX_DELAY_SECS", &mut w.max_delay_secs),
            ("DEPOT_WEBHOOKS_POLL_MS", &mut w.poll_ms),
        ] {
            if let Some(v) = get(key) {
                *field = num(key, v)?;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), StartError> {
        if self.max_page_size == 0 {
            return Err(StartError::Config(
                "max_page_size must be at least 1".into(),
            ));
        }
        if self.max_parts == 0 {
            return Err(StartError::Config("max_parts must be at least 1".into()));
        }
        if self.max_uploads == 0 || self.max_uploads_per_account == 0 {
            return Err(StartError::Config(
                "max_uploads and max_uploads_per_account must be at least 1".into(),
            ));
        }
        if self.body_timeout_secs == 0
            || self.header_timeout_secs == 0
            || self.body_rate_window_secs == 0
        {
            return Err(StartError::Config(
                "timeouts must be at least 1 second".into(),
            ));
        }
        for origin in &self.cors.allowed_origins {
            normalize_origin(origin)?;
        }
        if self.remote_fetch.max_concurrent == 0
            || self.remote_fetch.max_concurrent_per_account == 0
            || self.remote_fetch.dns_timeout_secs == 0
        {
            return Err(StartError::Config(
                "remote_fetch.max_concurrent, max_concurrent_per_account and dns_timeout_secs \
                 must be at least 1"
                    .into(),
            ));
        }
        if self.remote_fetch.timeout_secs == 0 || self.remote_fetch.stall_secs == 0 {
            return Err(StartError::Config(
                "remote_fetch timeouts must be at least 1 second".into(),
            ));
        }
        for host in &self.remote_fetch.allow_hosts {
            crate::fetch::HostRule::parse(host)
                .map_err(|e| StartError::Config(format!("remote_fetch.allow_hosts: {e}")))?;
        }
        if self.store.redirect_downloads && self.store.kind != StoreKind::S3 {
            return Err(StartError::Config(
                "store.redirect_downloads (DEPOT_STORE_REDIRECT_DOWNLOADS) needs store.kind = \"s3\""
                    .into(),
            ));
        }
        if !(1..=7 * 24 * 3600).contains(&self.store.redirect_ttl().as_secs()) {
            return Err(StartError::Config(
                "store.redirect_ttl_secs must be between 1 and 604800 (7 days, S3's limit)".into(),
            ));
        }
        if self.store.inline_max.unwrap_or(0) > 4 * crate::store::INLINE_MAX {
            return Err(StartError::Config(format!(
                "store.inline_max must be at most {} (larger values leave sled's log segments)",
                4 * crate::store::INLINE_MAX
            )));
        }
        if self.store.kind == StoreKind::S3 {
            if self.store.bucket.as_deref().unwrap_or("").is_empty() {
                return Err(StartError::Config(
                    "store.bucket (DEPOT_STORE_BUCKET) is required with store.kind = \"s3\"".into(),
                ));
            }
            if self.max_file_size > crate::store::S3_MAX_FILE_SIZE {
                return Err(StartError::Config(format!(
                    "max_file_size may be at most {} with store.kind = \"s3\" (one S3 copy)",
                    crate::store::S3_MAX_FILE_SIZE
                )));
            }
        }
        if self.meta.kind == MetaKind::Postgres && self.meta.url.as_deref().unwrap_or("").is_empty()
        {
            return Err(StartError::Config(
                "meta.url (DEPOT_META_URL) is required with meta.kind = \"postgres\"".into(),
            ));
        }
        if self.meta.pool_size == 0 {
            return Err(StartError::Config(
                "meta.pool_size must be at least 1".into(),
            ));
        }
        let s = &self.sessions;
        if s.upload_url_ttl_secs == 0 || s.temp_file_ttl_secs == 0 || s.sweep_interval_secs == 0 {
            return Err(StartError::Config(
                "session TTLs and the sweep interval must be at least 1 second".into(),
            ));
        }
        if s.multipart_max_part_size < crate::service::temp_multipart::MIN_PART_SIZE {
            return Err(StartError::Config(format!(
                "sessions.multipart_max_part_size must be at least {} bytes (the minimum part size)",
                crate::service::temp_multipart::MIN_PART_SIZE
            )));
        }
        let w = &self.webhooks;
        if w.timeout_secs == 0 || w.base_delay_ms == 0 || w.poll_ms == 0 || w.concurrency == 0 {
            return Err(StartError::Config(
                "webhooks: timeout_secs, base_delay_ms, poll_ms and concurrency must be at least 1"
                    .into(),
            ));
        }
        if self.tus.expiry_secs == 0 {
            return Err(StartError::Config(
                "tus.expiry_secs must be at least 1 second".into(),
            ));
        }
        if self.store.kind == StoreKind::S3 && self.tus_max_size() > crate::store::S3_MAX_FILE_SIZE
        {
            return Err(StartError::Config(format!(
                "tus.max_size may be at most {} with store.kind = \"s3\" (one S3 copy)",
                crate::store::S3_MAX_FILE_SIZE
            )));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(StartError::Config(format!(
                "log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            )));
        }
        crate::media::transform::Rules::from_config(&self.transforms)
            .map_err(|e| StartError::Config(format!("transforms: {e}")))?;
        if self.metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(StartError::Config(
                "metrics_token must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let mut cfg: Config = toml::from_str("listen = \"0.0.0.0:1\"\nmax_file_size = 5").unwrap();
        assert_eq!(cfg.max_file_size, 5);
        cfg.apply_env(|k| (k == "DEPOT_LISTEN").then(|| "127.0.0.1:2".to_string()))
            .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert!(cfg
            .apply_env(|k| (k == "DEPOT_MAX_PARTS").then(|| "many".to_string()))
            .is_err());
    }

    #[test]
    fn store_settings_from_file_and_env_and_secret_never_shown() {
        let mut cfg: Config = toml::from_str(
            "[store]\nkind = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"hunter2\"",
        )
        .unwrap();
        assert_eq!(cfg.store.kind, StoreKind::S3);
        cfg.apply_env(|k| match k {
            "DEPOT_STORE_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "DEPOT_STORE_ALLOW_HTTP" => Some("true".into()),
            "DEPOT_STORE_SECRET_ACCESS_KEY" => Some("s3cr3t-from-env".into()),
            _ => None,
        })
        .unwrap();
        assert!(cfg.store.allow_http);
        assert_eq!(cfg.store.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cr3t-from-env") && shown.contains("<redacted>"));
        cfg.validate().unwrap();
        cfg.store.bucket = None;
        assert!(cfg.validate().is_err(), "s3 without a bucket");
        assert!(cfg
            .apply_env(|k| (k == "DEPOT_STORE_KIND").then(|| "ftp".to_string()))
            .is_err());
        assert!(toml::from_str::<Config>("[store]\nkind = \"ftp\"").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
