//! The glue to Envoy: the only code that makes hostcalls. Decisions come from the host-tested modules.

mod credentials;
pub mod metrics;
pub mod root;
pub mod stream;
mod worker;

use std::time::UNIX_EPOCH;

/// Wall-clock time in Unix milliseconds, from the host.
fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// A short, stable fingerprint of a token for logs: never the token itself.
fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
}
