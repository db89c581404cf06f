//! Replays every committed seed (and fixed-crash regression input) in `corpus/<target>/` through the
//! same entry points the fuzz targets call: a stable `cargo test` that guards against regressions
//! without libFuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("seed file");
        // Name the input if it fails: the panic message alone may not say which one.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails", file.display());
    }
}

/// A fuzz target's entry point.
type Run = fn(&[u8]);

const TARGETS: [(&str, Run); 5] = [
    ("token", mcp_authz_fuzz::token::run),
    ("jwks", mcp_authz_fuzz::jwks::run),
    ("jsonrpc", mcp_authz_fuzz::jsonrpc::run),
    ("sse", mcp_authz_fuzz::sse::run),
    ("config", mcp_authz_fuzz::config::run),
];

#[test]
fn every_seed_passes_its_target() {
    for (target, run) in TARGETS {
        replay(target, run);
    }
}
