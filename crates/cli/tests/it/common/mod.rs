//! Helpers for tests that run the real `tocsin` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub mod outage;
#[macro_use]
pub mod server;

/// The binary under test: this build's, or `TOCSIN_TEST_BIN` (to run a
/// test against an older release and see that it fails without its fix).
pub fn tocsin() -> Command {
    match std::env::var_os("TOCSIN_TEST_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_tocsin")),
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The Python with the interop packages (tests/interop/requirements.txt):
/// `TOCSIN_PYTHON`, else the `.venv` that `scripts/test` makes.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TOCSIN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run ./scripts/test, which makes it with tests/interop/requirements.txt",
        venv.display()
    );
    venv
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub first_line: String,
    pub lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a command and waits for its first line of output.
pub fn spawn(mut cmd: Command) -> Proc {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first_line = lines.next().expect("a first line").expect("readable");
    Proc { child, first_line, lines: Some(lines) }
}

/// A running `tocsin dev push-service`.
pub struct DevPush {
    pub proc: Proc,
    pub base: String,
    pub http: reqwest::Client,
}

impl DevPush {
    pub fn start(extra: &[&str]) -> Self {
        let mut cmd = tocsin();
        cmd.args(["dev", "push-service", "--listen", "127.0.0.1:0"]).args(extra);
        let proc = spawn(cmd);
        let base = proc.first_line.strip_prefix("listening on ").expect("listening line").to_owned();
        DevPush { proc, base, http: reqwest::Client::new() }
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("dev push service")
    }

    pub async fn mint(&self, app_server_key: Option<&str>) -> Value {
        let body = match app_server_key {
            Some(k) => serde_json::json!({ "applicationServerKey": k }),
            None => serde_json::json!({}),
        };
        self.post("/subscriptions", body).await.json().await.expect("subscription JSON")
    }

    pub async fn mint_batch(&self, count: usize, app_server_key: &str) -> Vec<Value> {
        let body = serde_json::json!({ "count": count, "applicationServerKey": app_server_key });
        self.post("/subscriptions/batch", body).await.json().await.expect("subscriptions JSON")
    }

    pub async fn messages(&self) -> Vec<Value> {
        let v: Value = self.http.get(format!("{}/messages", self.base)).send().await.unwrap().json().await.unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn sub_state(&self, sub: &Value) -> Value {
        let id = sub_id(sub);
        self.http.get(format!("{}/subscriptions/{id}", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

pub fn sub_id(sub: &Value) -> String {
    sub["endpoint"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// A fresh VAPID key pair from the binary: (public, private).
pub fn vapid_keys() -> (String, String) {
    let out = tocsin().args(["vapid", "generate", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["publicKey"].as_str().unwrap().to_owned(), v["privateKey"].as_str().unwrap().to_owned())
}

/// Writes JSON lines to a temp file.
pub fn jsonl(subs: &[Value]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for s in subs {
        use std::io::Write;
        writeln!(f, "{s}").unwrap();
    }
    f
}

/// Runs `tocsin send` off the async runtime.
pub async fn send(args: Vec<String>) -> Output {
    let out = tokio::task::spawn_blocking(move || tocsin().arg("send").args(args).output().unwrap()).await.unwrap();
    if !out.stderr.is_empty() {
        eprintln!("tocsin send stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
