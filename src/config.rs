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
            max_grants_per_account: 10_000,
            max_grants_per_request: 1_000,
            graphql_max_cost: 20_000,
            graphql_time_budget_ms: 5_000,
            graphiql: true,
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
        }
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
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(StartError::Config(format!(
                "log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            )));
        }
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
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
