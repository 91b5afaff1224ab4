//! `depot upload` and `depot download`: the built binary against a real server, with the
//! resume state in a temp cache dir (`XDG_CACHE_HOME`). Covers several files at once, `--dir`,
//! `--quiet`, an upload killed (SIGKILL) mid-way and run again (it continues from the server's
//! offset), download resume from a `.part` (and a `.part` of other bytes), and the failures a
//! user meets: a bad or missing token, a missing file, a server that is down, a 404, a 413.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A place to run the CLI: a work dir for files and a cache dir for its resume state.
struct Cli {
    work: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            work: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `depot <args>` in the work dir, the server and token from `DEPOT_URL` / `DEPOT_TOKEN`
    /// (no instance is given anywhere: the CLI takes it from the token).
    fn command(&self, s: &Server, token: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_CACHE_HOME", self.cache.path())
            .env("DEPOT_URL", &s.base)
            .env_remove("DEPOT_TOKEN")
            .env_remove("DEPOT_INSTANCE")
            .stdin(Stdio::null());
        if let Some(t) = token {
            cmd.env("DEPOT_TOKEN", t);
        }
        cmd
    }

    fn run(&self, s: &Server, token: Option<&str>, args: &[&str]) -> Output {
        self.command(s, token, args).output().expect("run depot")
    }

    /// Resume state files left in the cache dir.
    fn states(&self, kind: &str) -> Vec<PathBuf> {
        match std::fs::read_dir(self.cache.path().join("depot").join(kind)) {
            Ok(d) => d
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The File JSON lines `depot upload` printed.
fn files(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

fn download_bytes(s: &Server, token: &str, path: &str) -> Vec<u8> {
    let r = s.get(path, Some(token));
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().unwrap().to_vec()
}

/// The server's offset of a tus upload (`HEAD`), `None` when it has none to tell.
fn tus_offset(s: &Server, token: &str, url: &str) -> Option<u64> {
    let r = s
        .client
        .head(url)
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    r.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Waits (up to 60 s) for `what`; a transfer paced by `--limit-rate` gets there well before.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server, a token of alice's, and a place to run the CLI.
/// `depot ARGS` started in the background (output discarded), returned once its resume state
/// is saved (the upload URL is in the cache dir as soon as the server made it): the child, the
/// state file and what it holds.
fn upload_in_background(
    cli: &Cli,
    s: &Server,
    token: &str,
    args: &[&str],
) -> (std::process::Child, PathBuf, Value) {
    let child = cli
        .command(s, Some(token), args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = wait_for("the resume state file", || cli.states("uploads").pop());
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    (child, state, saved)
}

fn start() -> (Server, String, Cli) {
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    (s, token, Cli::new())
}

/// The byte a rerun said it resumed at (`<prefix>N of M`).
fn resumed_at(o: &Output, prefix: &str) -> u64 {
    let err = stderr(o);
    err.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in {err:?}"))
}

#[test]
fn uploads_several_files_into_a_directory_and_downloads_them_back() {
    let (s, token, cli) = start();
    let big = bytes(3 * 1024 * 1024 + 17, 1);
    let small = b"hello from the command line\n".to_vec();
    cli.write("big.bin", &big);
    cli.write("note.txt", &small);
    cli.write("empty.txt", b"");
    let out = cli.run(
        &s,
        Some(&token),
        &[
            "upload",
            "big.bin",
            "note.txt",
            "empty.txt",
            "--dir",
            "/cli/docs",
            "--parallel",
            "2",
            "--chunk-size",
            "1MiB",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = files(&out);
    // One File per argument, in the order given, each a Hypi File in the directory asked for.
    let want: [(&str, &[u8]); 3] = [("big.bin", &big), ("note.txt", &small), ("empty.txt", b"")];
    assert_eq!(got.len(), 3, "{}", stdout(&out));
    for (f, (name, content)) in got.iter().zip(want) {
        assert_eq!(f["__typename"], "File");
        assert_eq!(f["name"], name);
        assert_eq!(f["directory"], "/cli/docs");
        assert_eq!(f["path"], format!("/cli/docs/{name}"));
        assert_eq!(f["size"], content.len() as u64);
        assert_eq!(f["sha256"], sha256_hex(content));
        let path = f["url"]["path"].as_str().unwrap();
        assert_eq!(download_bytes(&s, &token, path), content);
        // And back down through the CLI.
        let local = format!("down-{name}");
        let d = cli.run(&s, Some(&token), &["download", path, "-o", &local]);
        assert!(d.status.success(), "{}", stderr(&d));
        assert_eq!(std::fs::read(cli.path(&local)).unwrap(), content);
        assert!(!cli.path(&format!("{local}.part")).exists());
    }
    assert_eq!(got[2]["type"], "text/plain");
    // Finished uploads and downloads leave no resume state.
    assert!(cli.states("uploads").is_empty());
    assert!(cli.states("downloads").is_empty());
    let names: Vec<String> = listing(&s, &token)
        .iter()
        .map(|f| f["path"].as_str().unwrap_or("").to_string())
        .collect();
    for name in ["big.bin", "note.txt", "empty.txt"] {
        assert!(names.contains(&format!("/cli/docs/{name}")), "{names:?}");
    }
}

#[test]
fn quiet_prints_only_url_paths_and_flags_beat_the_environment() {
    let (s, token, cli) = start();
    cli.write("a.txt", b"first");
    cli.write("b.txt", b"second");
    cli.write("e.txt", b"");
    // Resume state of an upload abandoned 8 days ago is swept; a recent one is kept.
    let states = cli.cache.path().join("depot").join("uploads");
    std::fs::create_dir_all(&states).unwrap();
    let stale = states.join("stale.json");
    let recent = states.join("recent.json");
    for p in [&stale, &recent] {
        std::fs::write(
            p,
            br#"{"upload_url":"http://127.0.0.1:1/tus/x","path":"/x","size":1}"#,
        )
        .unwrap();
    }
    let eight_days = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(eight_days)
        .unwrap();
    // A wrong DEPOT_URL in the environment; --url and --token on the command line win.
    let out = cli
        .command(
            &s,
            Some("not-a-token"),
            &["upload", "-q", "a.txt", "b.txt", "e.txt"],
        )
        .args(["--url", &s.base, "--token", &token])
        .env("DEPOT_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "--quiet prints nothing on stderr");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("/file/")), "{lines:?}");
    assert_eq!(download_bytes(&s, &token, &lines[0]), b"first");
    assert_eq!(download_bytes(&s, &token, &lines[1]), b"second");
    // An empty file streams as one empty PATCH (and its SHA-256 checks out too).
    assert_eq!(download_bytes(&s, &token, &lines[2]), b"");
    assert!(!stale.exists() && recent.exists());
    // A full URL downloads as well as a path; -o defaults to the URL's file name.
    let d = cli.run(
        &s,
        Some(&token),
        &["download", "-q", &format!("{}{}", s.base, lines[1])],
    );
    assert!(d.status.success(), "{}", stderr(&d));
    let name = lines[1].rsplit('/').next().unwrap();
    assert_eq!(std::fs::read(cli.path(name)).unwrap(), b"second");
}

#[test]
fn a_killed_upload_resumes_from_the_servers_offset() {
    // 1 MiB PATCHes at 4 MiB/s: about 12 s in all, so it is surely killed part way.
    killed_upload_resumes(&["--chunk-size", "1MiB", "--limit-rate", "4MiB"]);
}

#[test]
fn a_killed_streamed_upload_resumes_where_the_cut_patch_ended() {
    // One PATCH streaming the file at 4 MiB/s; the server keeps what it received when the
    // client dies, and the rerun streams the rest (and checks the whole file's SHA-256).
    killed_upload_resumes(&["--limit-rate", "4MiB"]);
}

#[test]
fn a_file_changed_under_a_resumed_stream_fails_the_end_to_end_check() {
    let (s, token, cli) = start();
    let size = 48 * 1024 * 1024;
    let src = cli.write("big.bin", &bytes(size, 5));
    let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
    let (mut child, _, saved) = upload_in_background(
        &cli,
        &s,
        &token,
        &["upload", "big.bin", "--limit-rate", "4MiB"],
    );
    let url = saved["upload_url"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("bytes kept on the server", || {
        tus_offset(&s, &token, &url).filter(|o| *o > 16)
    });
    // Bytes the server already holds change on disk, size and mtime kept: the rerun resumes
    // (same state key), hashes the file up to the server's offset from what is there now, and
    // the File's sha256 cannot match.
    {
        use std::io::Write;
        let mut f = std::fs::File::options().write(true).open(&src).unwrap();
        f.write_all(&[0xEE; 16]).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let out = cli.run(&s, Some(&token), &["upload", "big.bin"]);
    let (code, err) = failure(&out);
    assert_ne!(code, 0);
    assert!(err.contains("resuming big.bin"), "{err}");
    assert!(err.contains("did it change during the upload"), "{err}");
    assert!(
        cli.states("uploads").is_empty(),
        "no state is left to resume"
    );
}

/// `depot upload big.bin <first>` is killed part way; a plain rerun resumes from the server's
/// offset and makes the File of exactly the file's bytes.
fn killed_upload_resumes(first: &[&str]) {
    let (s, token, cli) = start();
    let size = 48 * 1024 * 1024;
    let content = bytes(size, 48);
    let src = cli.write("big.bin", &content);
    let mut args = vec!["upload", "big.bin"];
    args.extend_from_slice(first);
    let (mut child, state, saved) = upload_in_background(&cli, &s, &token, &args);
    let url = saved["upload_url"].as_str().unwrap().to_string();
    assert_eq!(saved["size"], size as u64);
    assert_eq!(
        Path::new(saved["path"].as_str().unwrap()),
        src.canonicalize().unwrap()
    );
    // A few MiB on their way (a PATCH in flight shows in the offset only once it ends).
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap(); // SIGKILL: no cleanup of any kind
    child.wait().unwrap();
    // What the server received is kept: finished PATCHes, and the cut one's bytes once the
    // server has seen its connection end.
    let before = wait_for("bytes kept on the server", || {
        tus_offset(&s, &token, &url).filter(|o| *o > 0)
    });
    assert!(before > 0 && before < size as u64, "offset {before}");
    assert!(state.exists(), "the state stays for the rerun");
    assert!(listing(&s, &token).is_empty(), "nothing is a File yet");

    let out = cli.run(&s, Some(&token), &["upload", "big.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The rerun went on from where the server was, not from 0.
    let err = stderr(&out);
    let from = resumed_at(&out, "depot: resuming big.bin at byte ");
    assert!(
        from >= before && from < size as u64,
        "resumed at {from}, server had {before}"
    );
    assert!(err.contains(&format!("of {size}")), "{err}");
    let got = files(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["size"], size as u64);
    assert_eq!(got[0]["sha256"], sha256_hex(&content));
    let path = got[0]["url"]["path"].as_str().unwrap();
    assert!(download_bytes(&s, &token, path) == content, "bytes differ");
    // The same upload became the File: one File, and the upload URL answers it.
    assert_eq!(listing(&s, &token).len(), 1);
    let r = s
        .client
        .get(&url)
        .header("Authorization", &token)
        .header("hypi-domain", INSTANCE)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["hypi"]["id"],
        got[0]["hypi"]["id"]
    );
    assert!(cli.states("uploads").is_empty(), "done: the state is gone");
}

#[test]
fn download_resumes_from_a_part_file_and_refuses_foreign_bytes() {
    let (s, token, cli) = start();
    let content = bytes(3 * 1024 * 1024, 7);
    let f = s.upload_one(&token, "data.bin", &content);
    let path = f["url"]["path"].as_str().unwrap();

    // A .part holding the first MiB: only the rest is fetched.
    cli.write("data.bin.part", &content[..1024 * 1024]);
    let out = cli.run(&s, Some(&token), &["download", path, "-o", "data.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "resuming download of data.bin at byte 1048576 of {}",
            content.len()
        )),
        "{err}"
    );
    assert!(std::fs::read(cli.path("data.bin")).unwrap() == content);
    assert!(!cli.path("data.bin.part").exists());

    // A .part of other bytes: the SHA-256 (depot's ETag) tells, and it is fetched again whole.
    let mut wrong = content[..1024 * 1024].to_vec();
    wrong[10] ^= 0xff;
    cli.write("again.bin.part", &wrong);
    let out = cli.run(&s, Some(&token), &["download", path, "-o", "again.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not belong to this file"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read(cli.path("again.bin")).unwrap() == content);

    // A .part longer than the file (416 from the server): started over.
    let mut long = content.clone();
    long.extend_from_slice(b"extra");
    cli.write("long.bin.part", &long);
    let out = cli.run(&s, Some(&token), &["download", path, "-o", "long.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(cli.path("long.bin")).unwrap() == content);
    assert!(cli.states("downloads").is_empty());
}

/// Exit code and stderr of a failing run.
fn failure(o: &Output) -> (i32, String) {
    assert!(!o.status.success(), "expected a failure: {}", stdout(o));
    (o.status.code().unwrap_or(-1), stderr(o))
}

#[test]
fn failures_are_one_clear_line_with_an_exit_code() {
    let (s, token, cli) = start();
    cli.write("a.txt", b"a");

    // A token the server refuses: 401 with its code and message, exit 4.
    let (code, err) = failure(&cli.run(&s, None, &["upload", "a.txt", "--token", "bad"]));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("depot: upload a.txt: 401 UNAUTHENTICATED: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // No token at all: the same.
    let (code, err) = failure(&cli.run(&s, None, &["upload", "a.txt"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("401 UNAUTHENTICATED"), "{err}");
    // A token for another instance than the one asked for.
    let (code, err) = failure(&cli.run(
        &s,
        Some(&token),
        &["upload", "a.txt", "--instance", "other.test"],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("token is for instance acme.test"), "{err}");

    // A missing file fails alone: the others are uploaded, the exit code is non-zero.
    let out = cli.run(&s, Some(&token), &["upload", "missing.bin", "a.txt"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("depot: upload missing.bin: cannot read missing.bin"),
        "{err}"
    );
    assert_eq!(files(&out).len(), 1);
    assert_eq!(files(&out)[0]["name"], "a.txt");

    // A file the server does not have, and one another account may not see: 404, exit 5.
    let (code, err) = failure(&cli.run(
        &s,
        Some(&token),
        &["download", "/file/nope-nope.png", "-o", "x.png"],
    ));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    let path = files(&out)[0]["url"]["path"].as_str().unwrap().to_string();
    let bob = s.token("bob", INSTANCE, false);
    let (code, err) = failure(&cli.run(&s, Some(&bob), &["download", &path, "-o", "x.txt"]));
    assert_eq!(code, 5, "{err}");
    assert!(!cli.path("x.txt").exists() && !cli.path("x.txt.part").exists());

    // Bad command lines: exit 2.
    let (code, err) = failure(&cli.run(&s, Some(&token), &["upload", "a.txt", "--url", "ftp://x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an http or https URL"), "{err}");
    let (code, _) = failure(&cli.run(&s, Some(&token), &["upload", "a.txt", "--chunk-size", "0"]));
    assert_eq!(code, 2);

    // A server that is down: exit 3, saying which URL.
    let base = s.base.clone();
    s.stop();
    let down = Server::start();
    let (code, err) = failure(
        &cli.command(&down, Some(&token), &["upload", "a.txt"])
            .env("DEPOT_URL", &base)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("cannot reach {base}/tus/")), "{err}");
}

#[test]
fn a_file_over_the_size_limit_is_413() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "1024")]);
    let token = s.token("alice", INSTANCE, false);
    let cli = Cli::new();
    cli.write("big.bin", &bytes(4096, 3));
    let (code, err) = failure(&cli.run(&s, Some(&token), &["upload", "big.bin"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("depot: upload big.bin: 413 "), "{err}");
    assert!(listing(&s, &token).is_empty());
}

#[test]
fn a_connection_cut_mid_upload_is_retried_from_the_servers_offset() {
    cut_upload_is_retried(&["--chunk-size", "1MiB"]);
}

#[test]
fn a_connection_cut_mid_stream_is_retried_and_the_whole_file_checked() {
    // The client read (and hashed) more than the server kept when the connection went: the
    // retry streams from the server's offset and the end-to-end SHA-256 still matches.
    cut_upload_is_retried(&[]);
}

/// `depot upload cut.bin <extra>` through a proxy that cuts every connection after 3 MiB and
/// then refuses new ones for a while: the client retries from the server's offset.
fn cut_upload_is_retried(extra: &[&str]) {
    let (s, token, cli) = start();
    let size = 8 * 1024 * 1024;
    let content = bytes(size, 9);
    cli.write("cut.bin", &content);
    // The proxy closes every connection once 3 MiB went through it, and refuses new ones
    // until it is restored: a network outage in the middle of the upload.
    let proxy = Proxy::start(&s.base);
    proxy
        .budget
        .store(3 * 1024 * 1024, std::sync::atomic::Ordering::SeqCst);
    let child = cli
        .command(&s, Some(&token), &[&["upload", "cut.bin"], extra].concat())
        .env("DEPOT_URL", &proxy.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the cut", || {
        proxy
            .down
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    });
    proxy
        .budget
        .store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
    proxy.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("retrying from the server's offset"),
        "{}",
        stderr(&out)
    );
    let got = files(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["sha256"], sha256_hex(&content));
    let path = got[0]["url"]["path"].as_str().unwrap();
    assert!(download_bytes(&s, &token, path) == content);
    assert_eq!(listing(&s, &token).len(), 1);
}

/// Starts a paced download of `path` to `out` and kills it (SIGKILL) once some bytes are in
/// `out.part`; answers how many.
fn kill_download_midway(s: &Server, cli: &Cli, token: &str, path: &str, out: &str) -> u64 {
    let mut child = cli
        .command(
            s,
            Some(token),
            &["download", path, "-o", out, "--limit-rate", "1MiB"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = cli.path(&format!("{out}.part"));
    wait_for("bytes in the .part", || {
        std::fs::metadata(&part)
            .ok()
            .filter(|m| m.len() > 0 && !cli.states("downloads").is_empty())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::metadata(&part).unwrap().len()
}

#[test]
fn a_killed_download_resumes_unless_the_file_changed() {
    let (s, token, cli) = start();
    let size = 6 * 1024 * 1024;
    let content = bytes(size, 11);
    let f = s.upload_one(&token, "video.bin", &content);
    let path = f["url"]["path"].as_str().unwrap().to_string();

    // Killed at 1 MiB/s, run again: it goes on from the .part (with If-Range: the saved ETag).
    let kept = kill_download_midway(&s, &cli, &token, &path, "video.bin");
    assert!(kept > 0 && kept < size as u64, "{kept}");
    let out = cli.run(&s, Some(&token), &["download", &path, "-o", "video.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let from = resumed_at(&out, "depot: resuming download of video.bin at byte ");
    assert_eq!(from, kept);
    assert!(std::fs::read(cli.path("video.bin")).unwrap() == content);

    // Killed again, and the File's bytes replaced before the rerun: the server's ETag no
    // longer matches If-Range, so the whole new content comes (no splice of old and new).
    kill_download_midway(&s, &cli, &token, &path, "again.bin");
    let id = f["hypi"]["id"].as_str().unwrap();
    let new = bytes(size, 12);
    let r = s
        .client
        .put(s.url(&format!("/files/{id}/content")))
        .header("Authorization", &token)
        .header("hypi-domain", INSTANCE)
        .body(new.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let out = cli.run(&s, Some(&token), &["download", &path, "-o", "again.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
    assert!(std::fs::read(cli.path("again.bin")).unwrap() == new);
    assert!(cli.states("downloads").is_empty());
}
