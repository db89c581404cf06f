//! The glue to Envoy: the only code that makes hostcalls. Decisions come from the host-tested modules.

mod credentials;
pub mod metrics;
pub mod root;
mod sessions;
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

/// The cas for a compare-and-swap write of a shared-data record read with `cas` (None: the record did
/// not exist). Writing an absent record without a cas would let two workers that both read "absent"
/// both win. Envoy creates an absent key whatever the cas, but refuses to overwrite an existing one
/// unless the cas matches (proxy-wasm-cpp-host `SharedData::set`); its cas values count up from 1 across
/// all shared data of the process, so `u32::MAX` makes the write "create if absent": the loser reads the
/// winner's record on its next turn. An existing record holds that cas only after ~4 billion writes,
/// and then only by chance.
fn compare_and_swap_cas(cas: Option<u32>) -> Option<u32> {
    Some(cas.unwrap_or(u32::MAX))
}

/// A short, stable fingerprint of a token for logs: never the token itself.
fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
}
