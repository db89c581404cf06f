//! Entry points of the libFuzzer targets in `fuzz_targets/` (one `run` per target), kept in a library
//! so that `tests/corpus.rs` replays the committed seed corpus through exactly the same code on stable
//! `cargo test`. Each `run` feeds one input to the filter's own code and panics when an invariant that
//! must hold for every input is broken; docs/fuzzing.md lists the invariants.

pub mod config;
pub mod jsonrpc;
pub mod jwks;
pub mod keys;
pub mod policy;
pub mod replies;
pub mod sse;
pub mod token;

/// The clock every target uses (Unix seconds, 2027-01-15): verdicts must not depend on when it runs.
pub const NOW: i64 = 1_800_000_000;

/// Splits `data` at the first `\n`: (before, after). Without one, everything is `before`.
pub(crate) fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
