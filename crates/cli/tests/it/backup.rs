//! Backups and upgrades: `tocsin backup` under a subscribe load, restored
//! and checked; a database migrated by a newer release stops an older
//! binary at start with a message that names the migration.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{Backend, Db, Server};
use common::*;
use sqlx::Connection as _;

#[tokio::test]
async fn a_backup_under_load_holds_every_subscription_answered_before_it_began() {
    let db = Db::new(Backend::Sqlite);
    let dev = Arc::new(DevPush::start(&[]));
    let server = Arc::new(Server::start(&db, &["--endpoint-policy", "any"]));
    let key = server.vapid_public_key().await;
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients subscribing as fast as they are answered.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (dev, server, key, stop) = (dev.clone(), server.clone(), key.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sub = dev.mint(Some(&key)).await;
                let (status, _) = server.subscribe(&sub).await;
                assert_eq!(status, 200);
                answered.push((sub["endpoint"].as_str().unwrap().to_owned(), Instant::now()));
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");
    let began = Instant::now();
    let out = tokio::task::spawn_blocking({
        let (copy, url) = (copy.clone(), db.url.clone());
        move || tocsin().args(["backup", copy.to_str().unwrap(), "--database", &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for c in clients {
        answered.extend(c.await.unwrap());
    }
    let before: Vec<&String> = answered.iter().filter(|(_, at)| *at < began).map(|(e, _)| e).collect();
    let during = answered.len() - before.len();
    assert!(before.len() > 20 && during > 0, "a load before and during: {} before, {during} after", before.len());

    // Restored: a server on the copy has every one of them.
    let restored = Db::at(format!("sqlite://{}", copy.display()), Backend::Sqlite);
    let mut conn = sqlx::SqliteConnection::connect(&restored.url).await.unwrap();
    let stored: std::collections::HashSet<String> = sqlx::query_scalar("SELECT endpoint FROM subscriptions")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect();
    drop(conn);
    for e in &before {
        assert!(stored.contains(*e), "answered before the backup began but not in it: {e}");
    }
    let second = Server::start(&restored, &["--endpoint-policy", "any"]);
    assert_eq!(second.count().await, stored.len() as i64, "the copy opens as a database");
    assert_eq!(second.vapid_public_key().await, key, "the copy has the keys");
    eprintln!("backup: {} answered before it, {during} during or after; the copy holds {}", before.len(), stored.len());

    // It never overwrites, and PostgreSQL is pg_dump's.
    let out = tocsin().args(["backup", copy.to_str().unwrap(), "--database", &db.url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    let pg = Db::new(Backend::Postgres);
    let out =
        tocsin().args(["backup", dir.path().join("pg").to_str().unwrap(), "--database", &pg.url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}

async fn a_newer_database_stops_an_older_binary(backend: Backend) {
    let db = Db::new(backend);
    drop(Server::start(&db, &[]));
    // What a newer release would have left: a migration this one lacks.
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES (99990101000000, 'from the future', TRUE, ''::bytea, 0)";
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(&sql.replace("''::bytea", "x''").replace("TRUE", "1")).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    let out = tocsin()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .env_remove("TOCSIN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing started: {}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr.contains("migrated by a newer release") && stderr.contains("99990101000000"),
        "the message names the migration: {stderr}"
    );
}

#[tokio::test]
async fn a_database_of_a_newer_release_stops_an_older_binary_at_start_on_sqlite() {
    a_newer_database_stops_an_older_binary(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_database_of_a_newer_release_stops_an_older_binary_at_start_on_postgres() {
    a_newer_database_stops_an_older_binary(Backend::Postgres).await;
}
