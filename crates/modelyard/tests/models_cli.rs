//! `modelyard models load` / `unload` with the real binary against a
//! llama-swap mock: the host is asked, and the catalog shows the new state.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Dir, Options, Server};
use modelyard_testkit::{Flavour, MockModel, MockOptions, MockUpstream};

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .arg("--server")
        .arg(&server.base_url)
        .args(args)
        .env_remove("MODELYARD_API_KEY")
        .output()
        .expect("run modelyard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: the CLI runs synchronously on this thread while the mocks
// answer on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_load_and_unload_ask_the_host_and_the_catalog_follows() {
    let dir = Dir::new("models-cli");
    let mock = MockUpstream::start().await;
    let swap = MockUpstream::start_with(MockOptions::new(
        Flavour::LlamaSwap,
        vec![MockModel::new("sw", Some(8192)).with_loaded(false)],
    ))
    .await;
    let options = Options {
        extra: format!(
            "[[providers]]\nname = \"swap\"\nkind = \"llama-swap\"\nbase_url = \"{}\"\n",
            swap.base_url()
        ),
        ..Options::default()
    };
    let server = Server::start_with(&dir, &mock, &options).await;

    let (ok, out, err) = cli(&server, &["models", "load", "swap/sw"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "swap/sw: loaded");
    let (ok, out, _) = cli(&server, &["models"]);
    assert!(ok);
    let line = out.lines().find(|l| l.contains("swap/sw")).unwrap();
    assert!(line.contains("loaded"), "{out}");

    let (ok, out, err) = cli(&server, &["models", "unload", "swap/sw"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "swap/sw: not loaded");
    let (ok, out, _) = cli(&server, &["models"]);
    assert!(ok);
    let line = out.lines().find(|l| l.contains("swap/sw")).unwrap();
    assert!(line.contains("idle"), "{out}");
    let paths: Vec<String> = swap.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p == "/upstream/sw/health"),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "/api/models/unload/sw"),
        "{paths:?}"
    );

    // The mock's provider is plain OpenAI-compatible: it cannot.
    let (ok, _, err) = cli(&server, &["models", "load", "mock/echo"]);
    assert!(!ok);
    assert!(err.contains("not supported by kind openai"), "{err}");
    let (ok, _, err) = cli(&server, &["models", "load", "no-slash"]);
    assert!(!ok);
    assert!(err.contains("is not a provider/model id"), "{err}");
}
