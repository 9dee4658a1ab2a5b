//! Storage URLs never show their password: not in `config check`, not in
//! the error `serve` prints when the database cannot be reached.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

const SECRET: &str = "hunter2-pw";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(name: &str, url: &str) -> (Dir, PathBuf) {
    let dir = Dir(std::env::temp_dir().join(format!(
        "modelyard-config-check-{}-{name}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("modelyard.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    (dir, path)
}

fn modelyard(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run modelyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn config_check_prints_the_storage_url_without_its_password() {
    for (name, url) in [
        (
            "userinfo",
            format!("postgres://app:{SECRET}@db.example:5432/modelyard"),
        ),
        (
            "param",
            format!("postgres://app@db.example/modelyard?sslmode=disable&password={SECRET}"),
        ),
    ] {
        let (_dir, config) = write_config(name, &url);
        let (ok, text) = modelyard(&config, &["config", "check"]);
        assert!(ok, "{text}");
        assert!(text.contains("storage  postgres://app"), "{text}");
        assert!(text.contains("db.example"), "{text}");
        assert!(
            !text.contains(SECRET),
            "{name}: the password is printed: {text}"
        );
    }
}

#[test]
fn serve_reports_an_unreachable_database_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let (_dir, config) = write_config(
        "serve",
        &format!("postgres://app:{SECRET}@127.0.0.1:1/modelyard?password={SECRET}"),
    );
    let (ok, text) = modelyard(&config, &["serve"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("127.0.0.1:1"),
        "the error names the database: {text}"
    );
    assert!(!text.contains(SECRET), "the password is printed: {text}");
}
