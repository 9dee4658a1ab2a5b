//! The application layer knows no HTTP framework: no source file under
//! `src/service/` or `src/conversations/` (the turn engine) mentions
//! `axum`, and none reaches into a handler module (`crate::api`,
//! `crate::gateway`) or the HTTP glue (`crate::http`). The CLI does not
//! call handler modules (`modelyard_server::api`) either: it uses the
//! service layer.

use std::path::{Path, PathBuf};

/// Folders of the application layer.
const LAYER: &[&str] = &["src/service", "src/conversations"];

/// Modules every layer file is checked for (the service modules named
/// here must exist, so a rename does not silently drop them).
const SERVICE_MODULES: &[&str] = &[
    "src/service/conversations.rs",
    "src/service/error.rs",
    "src/service/favorites.rs",
    "src/service/imports.rs",
    "src/service/keys.rs",
    "src/service/llm_call.rs",
    "src/service/llm_configs.rs",
    "src/service/models.rs",
    "src/service/operations.rs",
    "src/service/replay.rs",
    "src/service/turns.rs",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn layer_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in LAYER {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 3, "found the layer's files: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read source");
            let name = path
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            (name, text)
        })
        .collect()
}

#[test]
fn the_application_layer_does_not_know_axum() {
    let offenders: Vec<String> = layer_files()
        .into_iter()
        .filter(|(_, text)| text.contains("axum"))
        .map(|(name, _)| name)
        .collect();
    assert!(offenders.is_empty(), "these mention axum: {offenders:?}");
}

#[test]
fn the_application_layer_does_not_import_handler_modules() {
    let offenders: Vec<String> = layer_files()
        .into_iter()
        .filter(|(_, text)| {
            text.contains("crate::api")
                || text.contains("crate::gateway")
                || text.contains("crate::http")
                || text.contains("super::api")
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        offenders.is_empty(),
        "these import a handler module: {offenders:?}"
    );
}

#[test]
fn every_service_module_is_checked() {
    let files = layer_files();
    for module in SERVICE_MODULES {
        assert!(
            files.iter().any(|(name, _)| name == module),
            "{module} is part of the layer"
        );
    }
}

#[test]
fn the_cli_does_not_call_handler_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modelyard/src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(!files.is_empty(), "found the CLI's sources");
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("read source");
            text.contains("modelyard_server::api")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "the CLI calls handlers: {offenders:?}"
    );
}
