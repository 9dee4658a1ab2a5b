//! The application layer knows no HTTP framework: no source file under
//! `src/service/` or `src/conversations/` (the turn engine) mentions
//! `axum`, and none reaches into a handler module (`crate::api`,
//! `crate::gateway`) except the ones listed in [`HANDLER_IMPORTS_LEFT`].

use std::path::{Path, PathBuf};

/// Folders of the application layer.
const LAYER: &[&str] = &["src/service", "src/conversations"];

/// Files that still import a handler module's helpers, pending the typed
/// service error (issue 13, item 1); the list only shrinks.
const HANDLER_IMPORTS_LEFT: &[&str] = &["src/conversations/configs.rs"];

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
        .filter(|(name, _)| !HANDLER_IMPORTS_LEFT.contains(&name.as_str()))
        .filter(|(_, text)| text.contains("crate::api") || text.contains("crate::gateway"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        offenders.is_empty(),
        "these import a handler module: {offenders:?}"
    );
}
