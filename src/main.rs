//! The `depot` command: `serve` runs the service, `token` issues a JWT, `upload` and
//! `download` are a client of a running server.

use clap::{Parser, Subcommand};
use depot::config::{Config, Overrides};
use depot::error::StartError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "depot",
    version,
    about = "Self-hosted file upload and download service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Config file (default: config/default.toml when present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (blobs, metadata, signing key).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Where and as whom `upload` and `download` talk, and how they report.
#[derive(clap::Args)]
struct Remote {
    /// The server's base URL.
    #[arg(long, env = "DEPOT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The token (a JWT, bare or `Bearer <jwt>`); none: anonymous.
    #[arg(long, env = "DEPOT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The instance domain sent as `hypi-domain` (default: the token's `instance` claim).
    #[arg(long, env = "DEPOT_INSTANCE")]
    instance: Option<String>,
    /// Most bytes per second per file, e.g. 2MiB.
    #[arg(long, value_name = "BYTES", value_parser = depot::client::parse_bytes)]
    limit_rate: Option<u64>,
    /// No progress bars or notes; `upload` prints only each File's `url.path`.
    #[arg(long, short)]
    quiet: bool,
}

/// The largest `--chunk-size` (each chunk of each parallel file is held in memory once).
const MAX_CHUNK: u64 = 256 << 20;

fn chunk_size(s: &str) -> Result<u64, String> {
    let n = depot::client::parse_bytes(s)?;
    if n > MAX_CHUNK {
        return Err(format!("{s:?} is larger than the 256MiB limit"));
    }
    Ok(n)
}

#[derive(Subcommand)]
enum Command {
    /// Upload files over the resumable (tus) protocol, printing each File as JSON (one line
    /// per file, in the order given). An interrupted upload resumes when run again.
    Upload {
        #[command(flatten)]
        remote: Remote,
        /// The files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The directory the files go to, e.g. /avatars.
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        /// Files uploaded at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Bytes per PATCH request (up to 256MiB), each with a SHA-256 checksum. Without it
        /// one PATCH streams the file (from where the server's copy ends), and the File's
        /// sha256 is checked against the bytes read.
        #[arg(long, value_name = "BYTES", value_parser = chunk_size)]
        chunk_size: Option<u64>,
    },
    /// Download a File by its `url.path` (or a full URL); an interrupted download resumes from
    /// FILE.part when run again.
    Download {
        #[command(flatten)]
        remote: Remote,
        /// `/file/<instanceId>-<fileId>.<ext>`, or a full URL.
        #[arg(value_name = "PATH")]
        path: String,
        /// Where to write it (default: the URL's file name, here).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Run the HTTP service.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print a signed token (HS256) for an account of an instance.
    Token {
        #[command(flatten)]
        common: Common,
        /// The account (`sub` claim).
        #[arg(long)]
        sub: String,
        /// The instance domain, as sent in `hypi-domain`.
        #[arg(long)]
        instance: String,
        /// Make the account an admin of the instance.
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 1h, 30d.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Re-hash every blob, check every record and reference count; exit 1 on damage.
    /// On the embedded store it needs the server stopped (it refuses otherwise); on shared
    /// backends (`[meta] kind = "postgres"`) it runs while nodes serve, checking each finding
    /// again under the blob's cross-node lock.
    Fsck {
        #[command(flatten)]
        common: Common,
        /// Quarantine corrupt blobs and rewrite reference counts from the records.
        #[arg(long)]
        repair: bool,
    },
    /// Remove blobs nothing references, once older than the grace period.
    /// On the embedded store it needs the server stopped (it refuses otherwise); on shared
    /// backends it runs while nodes serve (each removal under the blob's cross-node lock).
    Gc {
        #[command(flatten)]
        common: Common,
        /// Unreferenced blobs younger than this are kept.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Apply the metadata database's pending schema migrations (`[meta] kind = "postgres"`;
    /// `serve` applies them too). Safe while nodes serve.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Copy every blob to another store (`--from local:DIR --to s3`, or back), or every
    /// metadata record from a data dir's sled store to PostgreSQL (`--from sled:DIR --to
    /// postgres:URL`). Resumable (run again after an interruption), verified (blobs are
    /// re-hashed; records are compared one by one at the end). Needs the source's server
    /// stopped.
    MigrateStore {
        /// Config file whose [store] table (and DEPOT_STORE_* env) describes an `s3` side, and
        /// whose [meta] url (DEPOT_META_URL) a bare `postgres` target uses.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Source: `local:DIR` (a data dir's blobs), `s3`, or `sled:DIR` (a data dir's
        /// metadata).
        #[arg(long, value_name = "STORE")]
        from: String,
        /// Target: `s3` or `local:DIR` for blobs; `postgres:URL` (or `postgres`, for the
        /// configured [meta] url, which keeps a password off the command line) for metadata.
        #[arg(long, value_name = "STORE")]
        to: String,
    },
}

/// A store named on the command line; a local data dir is locked while it is used.
fn store_arg(
    spec: &str,
    config: &Config,
    source: bool,
) -> Result<
    (
        Option<std::fs::File>,
        std::sync::Arc<dyn depot::store::BlobStore>,
    ),
    StartError,
> {
    if spec == "s3" {
        let mut store = config.store.clone();
        store.kind = depot::config::StoreKind::S3;
        return Ok((
            None,
            std::sync::Arc::new(depot::store::S3Store::open(&store)?),
        ));
    }
    let Some(dir) = spec.strip_prefix("local:").filter(|d| !d.is_empty()) else {
        return Err(StartError::Config(format!(
            "a store is `local:DIR` or `s3`, got {spec:?}"
        )));
    };
    let dir = PathBuf::from(dir);
    if source && !dir.join("blobs").is_dir() {
        return Err(StartError::Config(format!(
            "{} is not a depot data dir (no blobs/)",
            dir.display()
        )));
    }
    let lock = lock_stopped(&dir)?;
    Ok((
        Some(lock),
        std::sync::Arc::new(depot::store::LocalStore::open(&dir)?),
    ))
}

/// `migrate-store --from sled:DIR --to postgres[:URL]`: copies a data dir's metadata records to
/// PostgreSQL, holding the data dir's lock (a running server holds it too).
fn migrate_meta(dir: &str, to: &str, config: &Config) -> Result<ExitCode, StartError> {
    let url = match to.strip_prefix("postgres") {
        Some("") => config
            .meta
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                StartError::Config(
                    "--to postgres needs [meta] url (DEPOT_META_URL), or give --to postgres:URL"
                        .into(),
                )
            })?,
        Some(rest) if rest.len() > 1 && rest.starts_with(':') => rest[1..].to_string(),
        _ => {
            return Err(StartError::Config(format!(
                "metadata migrates from sled:DIR to postgres:URL (or postgres), not to {to:?}"
            )))
        }
    };
    if dir.is_empty() {
        return Err(StartError::Config("sled:DIR needs a data dir".into()));
    }
    let dir = PathBuf::from(dir);
    if !dir.join("meta").is_dir() {
        return Err(StartError::Config(format!(
            "{} is not a depot data dir with sled metadata (no meta/)",
            dir.display()
        )));
    }
    let _lock = lock_stopped(&dir)?;
    let from = depot::meta::SledMeta::open(&dir.join("meta"))?;
    let mut opts = config.meta.pg_options();
    opts.url = url;
    let target = depot::meta::PgMeta::open(&opts)?;
    let r = depot::meta::migrate::migrate_meta(&from, &target, |line| {
        println!("migrate-store: {line}")
    })?;
    for line in r.lines() {
        println!("migrate-store: {line}");
    }
    if r.verified() {
        println!("migrate-store: verified: the target holds every record of the source");
        return Ok(ExitCode::SUCCESS);
    }
    for d in &r.differences {
        println!("migrate-store: DIFFERS: {d}");
    }
    println!(
        "migrate-store: {} differences (run again to resume; a record the target holds with \
         other content is not overwritten)",
        r.difference_count
    );
    Ok(ExitCode::FAILURE)
}

/// Takes a data dir's lock for an offline command, telling the user to stop the server that
/// holds it.
fn lock_stopped(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    depot::lock_data_dir(dir).map_err(|e| match e {
        StartError::DataDirBusy { path, .. } => StartError::DataDirBusy {
            path,
            hint: ": stop the server first",
        },
        other => other,
    })
}

/// Opens the data dir for offline maintenance, refusing while a server holds it.
fn offline(common: Common) -> Result<(std::fs::File, depot::service::Service), StartError> {
    let config = Config::load(&Overrides {
        config: common.config,
        listen: None,
        data_dir: common.data_dir,
    })?;
    let lock = lock_stopped(&config.data_dir)?;
    let svc = depot::open_service(config)?;
    Ok((lock, svc))
}

fn init_logging(filter: &str, format: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Malformed HTTP is the client's fault: counted and summed up at WARN, not ERROR.
    let quiet = depot::http::error::client_errors::QuietClientErrors;
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(quiet)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(quiet)
            .init();
    }
    depot::http::error::client_errors::report_client_errors(std::time::Duration::from_secs(60));
}

/// Prints a client failure on one line; its kind's exit code.
fn client_failure(what: &str, e: &depot::error::ClientError) -> ExitCode {
    eprintln!("depot: {what}: {e}");
    ExitCode::from(e.exit_code())
}

/// Runs a client command on its own small runtime.
fn client_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(StartError::Server)
}

/// Progress bars are for a person watching: a terminal on stderr, and no `--quiet`.
fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn client_target(
    remote: &Remote,
) -> Result<(depot::client::Target, depot::client::StateDir), depot::error::ClientError> {
    Ok((
        depot::client::Target::new(&remote.url, remote.token.clone(), remote.instance.clone())?,
        depot::client::StateDir::from_env()?,
    ))
}

fn upload(
    remote: Remote,
    files: Vec<PathBuf>,
    opts: depot::client::upload::UploadOptions,
) -> Result<ExitCode, StartError> {
    let (target, state) = match client_target(&remote) {
        Ok(t) => t,
        Err(e) => return Ok(client_failure("upload", &e)),
    };
    let results = client_runtime()?.block_on(depot::client::upload::upload_files(
        &target, &state, &files, &opts,
    ));
    let mut code = ExitCode::SUCCESS;
    let mut failed = false;
    for (file, result) in files.iter().zip(results) {
        match result {
            Ok(f) if remote.quiet => println!("{}", f["url"]["path"].as_str().unwrap_or("")),
            Ok(f) => println!("{f}"),
            Err(e) => {
                let c = client_failure(&format!("upload {}", file.display()), &e);
                if !failed {
                    failed = true;
                    code = c;
                }
            }
        }
    }
    Ok(code)
}

fn download(remote: Remote, path: String, output: Option<PathBuf>) -> Result<ExitCode, StartError> {
    let (target, state) = match client_target(&remote) {
        Ok(t) => t,
        Err(e) => return Ok(client_failure("download", &e)),
    };
    let opts = depot::client::download::DownloadOptions {
        limit_rate: remote.limit_rate,
        quiet: remote.quiet,
        progress: show_progress(remote.quiet),
    };
    let done = client_runtime()?.block_on(depot::client::download::download(
        &target, &state, &path, output, &opts,
    ));
    Ok(match done {
        Ok((out, len)) => {
            if !remote.quiet {
                eprintln!("depot: saved {} ({len} bytes)", out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => client_failure(&format!("download {path}"), &e),
    })
}

fn run(cli: Cli) -> Result<ExitCode, StartError> {
    match cli.command {
        Command::Upload {
            remote,
            files,
            dir,
            parallel,
            chunk_size,
        } => {
            let opts = depot::client::upload::UploadOptions {
                directory: dir,
                parallel: usize::from(parallel),
                chunk_size,
                limit_rate: remote.limit_rate,
                quiet: remote.quiet,
                progress: show_progress(remote.quiet),
            };
            upload(remote, files, opts)
        }
        Command::Download {
            remote,
            path,
            output,
        } => download(remote, path, output),
        Command::Serve { common, listen } => {
            let config = Config::load(&Overrides {
                config: common.config,
                listen,
                data_dir: common.data_dir,
            })?;
            init_logging(&config.log, &config.log_format);
            actix_web::rt::System::new().block_on(depot::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            common,
            sub,
            instance,
            admin,
            ttl,
        } => {
            let config = Config::load(&Overrides {
                config: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            let keys = depot::auth::Keys::load(&config.auth, &config.data_dir)?;
            println!(
                "{}",
                keys.issue(&sub, &instance.to_ascii_lowercase(), admin, ttl)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { common, repair } => {
            let (_lock, svc) = offline(common)?;
            let r = svc.fsck(repair)?;
            for sha in &r.corrupt_blobs {
                println!("corrupt blob {sha}");
            }
            for (id, sha) in &r.missing_blobs {
                println!("missing blob {sha} of file {id}");
            }
            for (id, want, have) in &r.size_mismatches {
                println!("size mismatch on file {id}: record {want}, blob {have}");
            }
            for (sha, recorded, actual) in &r.refcount_mismatches {
                println!("reference count of {sha}: recorded {recorded}, records {actual}");
            }
            for sha in &r.unreferenced_blobs {
                println!("unreferenced blob {sha} (depot gc removes it)");
            }
            for drift in &r.index_drift {
                println!("index drift: {drift}");
            }
            for drift in &r.usage_drift {
                println!("usage drift: {drift}");
            }
            for fix in &r.repaired {
                println!("repaired: {fix}");
            }
            println!(
                "fsck: {} blobs, {} records, {} corrupt, {} missing, {} size mismatches, {} count mismatches, {} unreferenced, {} index drift: {}",
                r.blobs_checked,
                r.records_checked,
                r.corrupt_blobs.len(),
                r.missing_blobs.len(),
                r.size_mismatches.len(),
                r.refcount_mismatches.len(),
                r.unreferenced_blobs.len(),
                r.index_drift.len(),
                if r.is_clean() { "clean" } else { "DAMAGED" }
            );
            Ok(if r.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Gc { common, grace } => {
            let (_lock, svc) = offline(common)?;
            let r = svc.gc(grace)?;
            println!(
                "gc: removed {} blobs ({} bytes), kept {} younger than the grace period; swept {} expired upload sessions",
                r.removed.len(),
                r.bytes,
                r.kept_young,
                r.sessions_swept
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { common } => {
            let config = Config::load(&Overrides {
                config: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            if config.meta.kind != depot::config::MetaKind::Postgres {
                return Err(StartError::Config(
                    "depot migrate needs meta.kind = \"postgres\" (sled migrates itself on open)"
                        .into(),
                ));
            }
            let store = depot::meta::PgMeta::connect(&config.meta.pg_options())?;
            let applied = store.migrate()?;
            let latest = depot::meta::pg::MIGRATIONS.last().map_or(0, |m| m.0);
            if applied.is_empty() {
                println!("migrate: schema is current (version {latest})");
            } else {
                for v in &applied {
                    println!("migrate: applied version {v}");
                }
                println!("migrate: schema is at version {latest}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::MigrateStore { config, from, to } => {
            let config = Config::load(&Overrides {
                config,
                listen: None,
                data_dir: None,
            })?;
            if let Some(dir) = from.strip_prefix("sled:") {
                return migrate_meta(dir, &to, &config);
            }
            let (_from_lock, src) = store_arg(&from, &config, true)?;
            let (_to_lock, dst) = store_arg(&to, &config, false)?;
            let r = depot::store::migrate(src.as_ref(), dst.as_ref(), |line| {
                println!("migrate-store: {line}")
            })?;
            println!(
                "migrate-store: {} blobs: {} copied ({} bytes), {} already present, {} corrupt (not copied)",
                r.total,
                r.copied,
                r.bytes_copied,
                r.present,
                r.corrupt.len()
            );
            Ok(if r.corrupt.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // The whole cause chain: "cannot listen on X: Address in use (os error 98)".
            eprintln!("depot: {}", e.chain());
            ExitCode::FAILURE
        }
    }
}
