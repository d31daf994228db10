//! The settings file and where settings come from, through the real
//! binary: `tocsin config example` and `config check`, unknown keys,
//! fractional values and lists of numbers, precedence (flag, variable,
//! file, default), secrets from `TOCSIN_<NAME>_FILE`, `--log-format json`
//! and the commit in `--version`.

use crate::common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::server::{Db, Server};
use common::*;

/// The binary with none of the test environment's settings.
fn bare() -> Command {
    let mut cmd = tocsin();
    for (k, _) in std::env::vars() {
        if k.starts_with("TOCSIN_") && k != "TOCSIN_TEST_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The long flags `tocsin serve --help` lists (help, version and config aside).
fn serve_flags() -> BTreeSet<String> {
    let out = bare().args(["serve", "--help"]).output().unwrap();
    let (help, _) = text(&out);
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=', ',']).next())
        .map(str::to_owned)
        .filter(|f| !["help", "version", "config"].contains(&f.as_str()))
        .collect()
}

#[test]
fn the_example_parses_covers_every_flag_and_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare().args(["config", "example"]).output().unwrap();
    assert!(out.status.success());
    let (example, _) = text(&out);
    let table: toml::Table = toml::from_str(&example).expect("the example is TOML");
    // Every key, set or commented out (`# key = …`).
    let mut keys: BTreeSet<String> = table.keys().cloned().collect();
    for l in example.lines() {
        if let Some((k, _)) = l.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            if !k.contains(' ') {
                keys.insert(k.to_owned());
            }
        }
    }
    let flags = serve_flags();
    assert!(flags.len() > 40, "flags read from --help: {flags:?}");
    let missing: Vec<&String> = flags.iter().filter(|f| !keys.contains(*f)).collect();
    assert!(missing.is_empty(), "flags of `tocsin serve` missing from `tocsin config example`: {missing:?}");
    assert_eq!(table["rate-limit-per-second"].as_float(), Some(0.2), "typed values: {example}");
    assert_eq!(table["listen"].as_str(), Some("127.0.0.1:8080"));
    // The example, as it is, is a valid configuration.
    let path = dir.path().join("tocsin.toml");
    std::fs::write(&path, &example).unwrap();
    let out = bare().args(["config", "check", "--config", path.to_str().unwrap()]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:8080\"  # file"), "{stdout}");
}

#[test]
fn an_unknown_key_stops_the_start_and_names_the_nearest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tocsin.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nrate-limit-brust = 5\n").unwrap();
    for args in [vec!["serve"], vec!["config", "check"]] {
        let out = bare().args(&args).arg("--config").arg(&path).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "names the file: {stderr}");
        assert!(
            stderr.contains("`rate-limit-brust`") && stderr.contains("did you mean `rate-limit-burst`?"),
            "{stderr}"
        );
    }
    // ./tocsin.toml in the working directory is read the same way.
    let out = bare().args(["config", "check"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A value its flag would refuse names the key too.
    std::fs::write(&path, "rate-limit-burst = 0\n").unwrap();
    let out = bare().args(["config", "check", "--config", path.to_str().unwrap()]).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`rate-limit-burst`"), "{stderr}");
    // Settings that are each valid but not together.
    std::fs::write(&path, "wait-timeout = 100\n").unwrap();
    let out = bare().args(["config", "check", "--config", path.to_str().unwrap()]).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--wait-timeout"), "{stderr}");
}

#[test]
fn precedence_is_flag_then_variable_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tocsin.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9001\"\nbody-limit = 1000\nrate-limit-per-second = 0.5\n").unwrap();
    let out = bare()
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .env("TOCSIN_LISTEN", "127.0.0.1:9002")
        .env("TOCSIN_BODY_LIMIT", "2000")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for line in [
        "listen = \"127.0.0.1:9002\"  # environment (TOCSIN_LISTEN)",
        "body-limit = 2000  # environment (TOCSIN_BODY_LIMIT)",
        "rate-limit-per-second = 0.5  # file",
        "rate-limit-burst = 60  # default",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
    // A flag beats the variable and the file.
    let out = bare()
        .args(["serve", "--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--database", &format!("sqlite://{}/t.db", dir.path().display()), "--endpoint-policy", "any"])
        .env("TOCSIN_LISTEN", "127.0.0.1:9002")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Proc { first_line: String::new(), lines: None, child: out };
    use std::io::BufRead as _;
    let stdout = proc.child.stdout.take().unwrap();
    let first = std::io::BufReader::new(stdout).lines().next().unwrap().unwrap();
    assert!(first.starts_with("listening on http://127.0.0.1:") && !first.ends_with(":9002"), "{first}");
    proc.first_line = first;
}

#[tokio::test]
async fn a_server_starts_from_a_file_with_fractions_lists_and_secrets_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(common::server::Backend::Sqlite);
    let (token, secret) = ("token-from-a-mounted-file-0123456789abcdef", "signing-secret-from-a-file");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let secret_file = dir.path().join("user-secret");
    std::fs::write(&secret_file, secret).unwrap();
    let path = dir.path().join("tocsin.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{}\"\nendpoint-policy = \"any\"\n\
             rate-limit-per-second = 0.5\nwebhook-retry-schedule = [5, 300]\ncors-origin = [\"https://a.example\"]\n",
            db.url
        ),
    )
    .unwrap();
    let mut cmd = bare();
    cmd.args(["serve", "--config", path.to_str().unwrap()])
        .env("TOCSIN_ADMIN_TOKEN_FILE", &token_file)
        .env("TOCSIN_USER_SIGNING_SECRET_FILE", &secret_file);
    let server = Server::from_proc(spawn(cmd));
    let r = server.http.get(server.url("/v1/stats")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the admin token read from TOCSIN_ADMIN_TOKEN_FILE (its newline dropped)");
    // A user id signed with the secret from its file is accepted.
    let dev = DevPush::start(&[]);
    let mut sub = dev.mint(Some(&server.vapid_public_key().await)).await;
    sub["userId"] = "u1".into();
    sub["userSignature"] = tocsin_server::proof::sign_user_id(secret, "u1").into();
    assert_eq!(server.subscribe(&sub).await.0, 200);
    let r = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/api/subscription"))
        .header("origin", "https://a.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://a.example", "a list from the file");

    // config check names the file as the source and never prints a secret.
    let out = bare()
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .env("TOCSIN_ADMIN_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("admin-token = \"<redacted>\"  # environment (TOCSIN_ADMIN_TOKEN_FILE)"), "{stdout}");
    assert!(stdout.contains("webhook-retry-schedule = [5, 300]  # file"), "{stdout}");
    assert!(!stdout.contains(token) && !stderr.contains(token), "the secret is not printed");
    // Both the variable and its file: refused.
    let out = bare()
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .env("TOCSIN_ADMIN_TOKEN_FILE", &token_file)
        .env("TOCSIN_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("both TOCSIN_ADMIN_TOKEN and TOCSIN_ADMIN_TOKEN_FILE"));
    // A database password is not printed either.
    let out = bare()
        .args(["config", "check"])
        .env("TOCSIN_DATABASE_URL", "postgres://tocsin:hunter2-secret@db.internal/tocsin")
        .current_dir(dir.path().join(".."))
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        !stdout.contains("hunter2-secret") && stdout.contains("postgres://tocsin:redacted@db.internal/tocsin"),
        "{stdout}"
    );
}

#[test]
fn logs_can_be_json_and_the_version_names_its_commit() {
    let out =
        bare().args(["--log-format", "json", "config", "check"]).current_dir(std::env::temp_dir()).output().unwrap();
    let (_, stderr) = text(&out);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "the check warns about the missing VAPID subject");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{v}");
    }
    let out = bare().arg("--version").output().unwrap();
    let (stdout, _) = text(&out);
    let commit = stdout.trim().strip_prefix("tocsin 0.1.0 (").and_then(|r| r.strip_suffix(')')).unwrap_or_default();
    let hex = commit.trim_end_matches("-modified");
    assert!(hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()), "the commit in {stdout:?}");
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(repo_root()).output().unwrap();
    assert_eq!(hex, String::from_utf8_lossy(&head.stdout).trim(), "the commit built from");
}
