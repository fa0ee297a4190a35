//! The coordinator's layers import only downwards (see `src/lib.rs`): every
//! `crate::LAYER` path in a layer's files names that layer or one below it.

use std::path::Path;

/// Lowest first; a layer may use itself and those before it (`store` and
/// `sandbox` are side by side: neither uses the other).
const LAYERS: [(&str, &[&str]); 6] = [
    ("domain", &["domain"]),
    ("store", &["domain", "store"]),
    ("sandbox", &["domain", "sandbox"]),
    ("services", &["domain", "store", "sandbox", "services"]),
    ("net", &["domain", "store", "sandbox", "services", "net"]),
    ("server", &["domain", "store", "sandbox", "services", "net", "server"]),
];

/// Every `.rs` file of a layer: `src/LAYER.rs` and everything under `src/LAYER/`.
fn files(src: &Path, layer: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = [src.join(format!("{layer}.rs"))].into_iter().filter(|p| p.exists()).collect();
    let mut dirs = vec![src.join(layer)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.map(Result::unwrap) {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules a file names as `crate::X` (comments left out).
fn used(text: &str) -> Vec<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    code.match_indices("crate::").map(|(i, _)| code[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()).collect()
}

#[test]
fn every_layer_imports_only_itself_and_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = 0;
    for (layer, allowed) in LAYERS {
        for file in files(&src, layer) {
            seen += 1;
            for name in used(&std::fs::read_to_string(&file).unwrap()) {
                assert!(allowed.contains(&name.as_str()), "{} (layer {layer}) uses crate::{name}", file.display());
            }
        }
    }
    assert!(seen > 30, "the layers' files were found ({seen})");
}

#[test]
fn an_upward_import_is_found() {
    assert_eq!(used("use crate::services::Services; // crate::net in a comment"), ["services"]);
    assert!(used("let x = 1;").is_empty());
}
