//! `modelyard keys` and the safe default, with the real binary: without
//! keys `serve` refuses a non-loopback address; `keys create` makes the
//! first admin key offline; the server then requires it, and client
//! commands send `$MODELYARD_API_KEY`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, listen: &str) -> PathBuf {
    let path = dir.join(format!("modelyard-{}.toml", free_port()));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\n[storage]\nurl = \"sqlite://{}/keys.db\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn cli(config: &Path, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelyard"));
    command.arg("--config").arg(config).args(args);
    command.env_remove("MODELYARD_API_KEY");
    if let Some(key) = key {
        command.env("MODELYARD_API_KEY", key);
    }
    command.output().expect("run modelyard")
}

#[test]
fn keys_are_made_offline_then_required() {
    let dir = Dir(std::env::temp_dir().join(format!(
        "modelyard-keys-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();

    // No key yet: a public address is refused before anything listens.
    let public = config(&dir.0, "0.0.0.0:0");
    let out = cli(&public, None, &["serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without API keys"), "{stderr}");

    // The first admin key, straight into the database.
    let port = free_port();
    let local = config(&dir.0, &format!("127.0.0.1:{port}"));
    let out = cli(
        &local,
        None,
        &["keys", "create", "--role", "admin", "--name", "ops"],
    );
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("mk_") && key.len() == 43, "{key}");
    let listed = cli(&local, None, &["keys", "ls"]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains(&key[..11]) && listing.contains("admin") && listing.contains("ops"));
    assert!(!listing.contains(&key[11..]), "ls never shows the secret");
    // Another project's member key.
    let out = cli(
        &local,
        None,
        &["keys", "create", "--project", "team-b", "--role", "member"],
    );
    assert!(out.status.success(), "{out:?}");

    let mut server = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .arg("--config")
        .arg(&local)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let without = cli(&local, None, &["conversations", "ls"]);
    let with = cli(&local, Some(&key), &["conversations", "new", "-t", "keyed"]);
    let listed = cli(&local, Some(&key), &["conversations", "ls"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("API key is required"),
        "{without:?}"
    );
    assert!(with.status.success(), "{with:?}");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("keyed"),
        "{listed:?}"
    );
}

#[test]
fn limits_are_set_and_shown_by_the_cli() {
    let dir = Dir(std::env::temp_dir().join(format!(
        "modelyard-key-limits-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let local = config(&dir.0, "127.0.0.1:0");
    let out = cli(&local, None, &["keys", "create", "--role", "member"]);
    assert!(out.status.success(), "{out:?}");
    let listed = cli(&local, None, &["keys", "ls"]);
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    let id = listing
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    // Set, then change one: the others stay.
    let out = cli(
        &local,
        None,
        &[
            "keys",
            "limits",
            &id,
            "--rpm",
            "100",
            "--max-cost-usd",
            "5",
            "--period",
            "day",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = cli(
        &local,
        None,
        &["keys", "limits", &id, "--max-concurrent", "4"],
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        "requests_per_minute  100",
        "max_cost_usd         5",
        "period               day",
        "max_concurrent       4",
    ] {
        assert!(shown.contains(line), "{line:?} in {shown}");
    }
    // A budget without a period is refused, naming the field.
    let out = cli(
        &local,
        None,
        &["keys", "limits", &id, "--clear", "--max-tokens", "9"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("period"), "{stderr}");
    // Another project's key is not found.
    let out = cli(&local, None, &["keys", "limits", "nope", "--rpm", "1"]);
    assert!(!out.status.success());
    // A project's limits.
    let out = cli(
        &local,
        None,
        &[
            "projects",
            "limits",
            "--max-tokens",
            "5000",
            "--period",
            "month",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("project default"), "{shown}");
    assert!(shown.contains("max_tokens           5000"), "{shown}");
    let out = cli(&local, None, &["projects", "limits", "--clear"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no limits"));
}
