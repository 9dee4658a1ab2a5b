//! PostgreSQL stopped and started again while 20 turns run, against the
//! built binary. Runs only when `MODELYARD_TEST_POSTGRES_URL` is set (a
//! server this test may restart with `pg_ctlcluster`, as root); it gets its
//! own database on that server. Lives in its own test binary: restarting the
//! server disturbs every other test using it.
//!
//! During the outage requests fail fast with an error and `GET
//! /health?ready=1` answers 503; afterwards every turn ends, no
//! conversation is left `running`, `seq` stays gap-free, the tables equal
//! the fold, and conversations are usable without a restart.

mod common;

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use common::{
    assert_store_consistent, conversation_usable, create_conversation, long_text, start_turn, Dir,
    Options, Server, LIMIT,
};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::time::Instant;

const PG_ENV: &str = "MODELYARD_TEST_POSTGRES_URL";
const TURNS: usize = 20;

/// `pg_ctlcluster <version> main <action>`.
fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action}: {status}");
}

/// PostgreSQL stopped; started again when dropped, even if the test fails.
struct Outage;

impl Outage {
    fn begin() -> Outage {
        pg_ctl("stop");
        Outage
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        pg_ctl("start");
    }
}

/// A fresh database on the test server, dropped at the end.
async fn fresh_database(server_url: &str) -> (String, PgConnectOptions, String) {
    let admin = PgConnectOptions::from_str(server_url)
        .expect("parse the PostgreSQL URL")
        .database("postgres");
    let name = format!("modelyard_pgr_{}", uuid::Uuid::now_v7().simple());
    let mut conn = admin.connect().await.expect("connect to PostgreSQL");
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("create the database");
    let _ = conn.close().await;
    let url = admin.clone().database(&name).to_url_lossy().to_string();
    (url, admin, name)
}

async fn wait_pg_up(admin: &PgConnectOptions) {
    eventually(LIMIT, "PostgreSQL comes back", || async {
        admin.connect().await.map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_20_turns() {
    let Some(server_url) = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) else {
        eprintln!("{PG_ENV} not set: skipped");
        return;
    };
    let can_restart = std::path::Path::new("/etc/postgresql").is_dir()
        && Command::new("pg_ctlcluster")
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
    if !can_restart {
        eprintln!("no local PostgreSQL cluster to restart (pg_ctlcluster): skipped");
        return;
    }
    let (url, admin, name) = fresh_database(&server_url).await;
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec![
        "slow:60".into(),
        "slow:200".into(),
        "echo".into(),
    ]));
    let dir = Dir::new("pg-restart");
    let options = Options {
        storage_url: Some(url.clone()),
        ..Options::default()
    };
    let server = Server::start_with(&dir, &mock, &options).await;

    // Given 20 turns streaming for about 4 s each...
    let mut turns = Vec::new();
    for _ in 0..TURNS {
        let conv = create_conversation(&server, "mock/slow:60").await;
        let turn = start_turn(&server, &conv, &long_text(60), None).await;
        turns.push((conv, turn));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ...when PostgreSQL stops under them...
    let outage = Outage::begin();
    let began = Instant::now();
    // ...readiness says so, liveness stays up...
    eventually(LIMIT, "ready turns 503", || async {
        let (status, body) = server
            .send(reqwest::Method::GET, "/health?ready=1", None)
            .await;
        if status == 503 {
            assert_eq!(body["store"], "unreachable", "{body}");
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
    let (status, body) = server.send(reqwest::Method::GET, "/health", None).await;
    assert_eq!(
        (status, &body["store"]),
        (200, &json!("unreachable")),
        "{body}"
    );
    // ...requests that need the database fail fast, with an error...
    let (conv0, _) = &turns[0];
    for (method, path, body) in [
        (
            reqwest::Method::GET,
            format!("/v1/conversations/{conv0}"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/conversations".to_owned(),
            Some(json!({"title": "during", "model": "mock/echo"})),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/conversations/{conv0}/turns"),
            Some(json!({"content": "now?"})),
        ),
    ] {
        let sent = Instant::now();
        let (status, answer) = server.send(method.clone(), &path, body).await;
        let took = sent.elapsed();
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains("database"),
            "{method} {path}: {answer}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{method} {path} took {took:?} during the outage"
        );
    }
    // ...and the turns' ends fall inside the outage.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(began.elapsed())).await;
    drop(outage);
    wait_pg_up(&admin).await;

    // Then every turn ends (the closing appends are retried), nothing is
    // left running, and the conversations are usable without a restart.
    for (conv, turn) in &turns {
        let turn = server.wait_turn(conv, turn).await;
        assert_ne!(turn["status"], "running", "{turn}");
        let c = server.get(&format!("/v1/conversations/{conv}")).await;
        assert_eq!(c["status"], "idle", "{c}");
        server.log(conv).await;
    }
    let (status, body) = server
        .send(reqwest::Method::GET, "/health?ready=1", None)
        .await;
    assert_eq!(status, 200, "{body}");
    for (conv, _) in turns.iter().take(3) {
        conversation_usable(&server, conv).await;
    }
    drop(server);
    assert_eq!(assert_store_consistent(&url).await, TURNS);

    let mut conn = admin.connect().await.expect("connect to PostgreSQL");
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await;
    let _ = conn.close().await;
}
