//! A real `tocsin serve` on SQLite or PostgreSQL, for integration tests.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use super::{spawn, tocsin, Proc};

/// The admin token every test server accepts (`TOCSIN_ADMIN_TOKEN`).
pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The user signing secret every test server has (`TOCSIN_USER_SIGNING_SECRET`).
pub const USER_SECRET: &str = "test-user-signing-secret";

/// Gives a subscription a user id, signed as the site's backend would sign it.
pub fn with_user(sub: &mut Value, user: &str) {
    sub["userId"] = Value::from(user);
    sub["userSignature"] = Value::from(tocsin_server::proof::sign_user_id(USER_SECRET, user));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test: a temp SQLite file, or a fresh
/// PostgreSQL database dropped at the end.
pub struct Db {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Db {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/tocsin.db", dir.path().display());
                Db { url, backend, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                let name = format!(
                    "tocsin_t_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
                );
                let st = Command::new("createdb").args(["-h", "127.0.0.1", "-U", "postgres", &name]).status();
                assert!(st.is_ok_and(|s| s.success()), "createdb failed: is PostgreSQL running on 127.0.0.1:5432?");
                Db { url: format!("postgres://postgres@127.0.0.1/{name}"), backend, _dir: None, pg_name: Some(name) }
            }
        }
    }
}

impl Db {
    /// A database the test made itself (a private PostgreSQL cluster, a
    /// file on a small disk): nothing is dropped at the end.
    pub fn at(url: String, backend: Backend) -> Self {
        Db { url, backend, _dir: None, pg_name: None }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = Command::new("dropdb")
                .args(["-h", "127.0.0.1", "-U", "postgres", "--force", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A running server.
pub struct Server {
    pub proc: Proc,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub fn start(db: &Db, extra: &[&str]) -> Self {
        Self::start_in(db, extra, None)
    }

    /// A server from a process the caller started (its first line is the address).
    pub fn from_proc(proc: Proc) -> Self {
        let base = proc.first_line.strip_prefix("listening on ").expect("listening line").to_owned();
        Server { proc, base, http: reqwest::Client::new() }
    }

    pub fn start_in(db: &Db, extra: &[&str], cwd: Option<&std::path::Path>) -> Self {
        Self::start_unsetting(db, extra, cwd, &[])
    }

    /// The test server without some of its environment (`unset`), e.g. the
    /// rate-limit exemption of loopback or the user signing secret.
    pub fn start_unsetting(db: &Db, extra: &[&str], cwd: Option<&std::path::Path>, unset: &[&str]) -> Self {
        Self::start_full(db, extra, cwd, unset, &[])
    }

    /// The test server with some variables of its own set.
    pub fn start_with_env(db: &Db, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(db, extra, None, &[], env)
    }

    fn start_full(
        db: &Db,
        extra: &[&str],
        cwd: Option<&std::path::Path>,
        unset: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = tocsin();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .args(extra)
            .env("TOCSIN_ADMIN_TOKEN", TOKEN)
            .env("TOCSIN_VAPID_SUBJECT", "mailto:tests@tocsin-tests.org")
            .env("TOCSIN_USER_SIGNING_SECRET", USER_SECRET)
            // The tests call the public routes far faster than a browser
            // does; the limits themselves are tested in adversarial.rs.
            .env("TOCSIN_RATE_LIMIT_EXEMPT", "127.0.0.0/8")
            .env_remove("TOCSIN_CONFIG");
        for name in unset {
            cmd.env_remove(name);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let proc = spawn(cmd);
        let base = proc.first_line.strip_prefix("listening on ").expect("listening line").to_owned();
        Server { proc, base, http: reqwest::Client::new() }
    }

    /// `tocsin serve` with nothing but a free port, in `cwd`: the README's quick start.
    pub fn start_default(cwd: &std::path::Path) -> Self {
        let mut cmd = tocsin();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .env_remove("TOCSIN_CONFIG")
            .env_remove("TOCSIN_DATABASE_URL")
            .env_remove("TOCSIN_ADMIN_TOKEN");
        let proc = spawn(cmd);
        let base = proc.first_line.strip_prefix("listening on ").expect("listening line").to_owned();
        Server { proc, base, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.proc.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.proc.child.wait().unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(TOKEN).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Raw bytes in and out, no token: the classic contract.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn subscribe(&self, sub: &Value) -> (u16, String) {
        self.raw(reqwest::Method::POST, "/api/subscription", sub.to_string()).await
    }

    pub async fn count(&self) -> i64 {
        self.get("/v1/stats").await.1["subscriptions"].as_i64().unwrap()
    }

    pub async fn vapid_public_key(&self) -> String {
        let v: Value = self.http.get(self.url("/api/vapid-public-key")).send().await.unwrap().json().await.unwrap();
        v["publicKey"].as_str().unwrap().to_owned()
    }

    /// Checks that the node answers (its engine polls for work by itself).
    pub async fn assert_up(&self) {
        let (status, _) = self.get("/healthz").await;
        assert_eq!(status, 200);
    }

    /// The deliveries this node has counted: `tocsin_deliveries_total`
    /// with `outcome="delivered"` in its `/metrics`.
    pub async fn delivered(&self) -> u64 {
        let text = self.http.get(self.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with("tocsin_deliveries_total{outcome=\"delivered\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Polls a message until it is done or cancelled.
    pub async fn wait_done(&self, id: &str) -> Value {
        for _ in 0..12_000 {
            let (_, m) = self.get(&format!("/v1/messages/{id}")).await;
            if m["state"] == "done" || m["state"] == "cancelled" {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("message {id} did not finish");
    }
}

/// A subscription from the dev push service, made with the server's key.
pub async fn minted(dev: &super::DevPush, server: &Server) -> Value {
    dev.mint(Some(&server.vapid_public_key().await)).await
}

/// `(status, error id)` of a POST to `/api/subscription`.
pub async fn post(server: &Server, body: &Value) -> (u16, String) {
    let (status, text) = server.subscribe(body).await;
    let id = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["id"].as_str().map(str::to_owned));
    (status, id.unwrap_or(text))
}

/// `tocsin token create --scope` against the server's database.
pub fn create_token(db: &Db, name: &str, scope: &str) -> String {
    let out =
        tocsin().args(["token", "create", "--name", name, "--scope", scope, "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One request with an optional token and JSON body: the status, and the
/// answer as JSON (or as a string when it is not JSON).
pub async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = server.http.request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Runs SQL on the test's database behind the server's back (as damage, or
/// an older release, would leave it): `sqlite3` through Python's module, or
/// `psql`.
pub fn tamper(db: &Db, sql: &str) {
    let ok = match db.backend {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
                ])
                .args([path, sql])
                .status()
        }
        Backend::Postgres => Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", &db.url, "-c", sql]).status(),
    };
    assert!(ok.is_ok_and(|s| s.success()), "{sql}");
}

/// Runs `body` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                $body(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                $body(Backend::Postgres).await
            }
        }
    };
}

/// `n` subscriptions minted by the dev push service for the server's key,
/// imported into the server's database with `tocsin subscriptions import`.
pub async fn populate(dev: &super::DevPush, server: &Server, db: &Db, n: usize) -> Vec<Value> {
    let key = server.vapid_public_key().await;
    let mut subs = Vec::with_capacity(n);
    while subs.len() < n {
        subs.extend(dev.mint_batch((n - subs.len()).min(5000), &key).await);
    }
    let file = super::jsonl(&subs);
    let out = tokio::task::spawn_blocking({
        let (path, url) = (file.path().to_owned(), db.url.clone());
        move || tocsin().args(["subscriptions", "import", path.to_str().unwrap(), "--database", &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    subs
}

/// What the dev push service received: (total, per subscription id).
pub async fn received(dev: &super::DevPush) -> (u64, std::collections::HashMap<String, u64>) {
    let v: Value = dev.http.get(format!("{}/received", dev.base)).send().await.unwrap().json().await.unwrap();
    let counts = v["counts"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    (v["total"].as_u64().unwrap(), counts)
}

/// Every subscription reached exactly once, and the message's counts exact.
/// (Subscriptions posted while it started may be in its audience too.)
pub async fn assert_reached_once(dev: &super::DevPush, subs: &[Value], m: &Value) {
    let n = subs.len() as i64;
    let c = &m["counts"];
    assert_eq!(c["targeted"], c["delivered"], "{m}");
    assert!(c["targeted"].as_i64().unwrap() >= n, "{m}");
    for k in ["failed", "gone", "expired", "pendingRetry"] {
        assert_eq!(c[k], 0, "{k}: {m}");
    }
    let (total, counts) = received(dev).await;
    let twice = counts.values().filter(|c| **c > 1).count();
    for s in subs {
        assert!(counts.get(&super::sub_id(s)).copied().unwrap_or(0) >= 1, "a subscription never got the message");
    }
    assert_eq!(total, c["delivered"].as_u64().unwrap(), "received as many as counted delivered");
    assert_eq!(twice, 0, "{twice} subscriptions got the message twice ({total} received for {n})");
}

/// `GET /v1/messages/{id}` with the admin token: the message's view.
pub async fn message(server: &Server, id: &str) -> Value {
    let (s, m) = call(server, reqwest::Method::GET, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    assert_eq!(s, 200, "{m}");
    m
}

/// Polls a message's view until `done(view)`, at most `limit`.
pub async fn until(server: &Server, id: &str, limit: std::time::Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let m = message(server, id).await;
        if done(&m) {
            return m;
        }
        assert!(started.elapsed() < limit, "not there after {limit:?}: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
