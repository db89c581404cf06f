//! The three ways a request ends for the filter: answered locally ([`send`]), refused ([`deny`]: counted,
//! logged, answered), or let through ([`finish`]: counted, resumed if it was held).

use super::host::Host;
use super::state::{Phase, StreamState};
use super::worker::Worker;
use crate::http_reply::LocalReply;
use crate::outcome::Denial;
use log::{info, warn};
use std::cell::RefCell;

/// A short, stable fingerprint of a token for logs: never the token itself.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Answers the effective stream locally.
pub fn send(host: &dyn Host, reply: &LocalReply) {
    if !host.send_reply(reply) {
        warn!("could not send local reply {}", reply.status);
    }
}

/// Sends the denial, counts it and logs it (with a token fingerprint, never the token).
pub fn deny(worker: &Worker, state: &RefCell<StreamState>, denial: &Denial, token: Option<&str>) {
    worker.metrics.count_denial(denial.reason);
    let (method, path) = {
        let mut s = state.borrow_mut();
        s.phase = Phase::Answered;
        (s.method.clone(), s.path.clone())
    };
    let line = format!(
        "denied status={} reason={} method={method} path={path:?} token={}",
        denial.reply.status,
        denial.reason.name(),
        token.map_or_else(|| "-".to_string(), fingerprint)
    );
    if denial.reply.status >= 500 {
        warn!("{line}")
    } else {
        info!("{line}")
    }
    send(worker.host.as_ref(), &denial.reply);
}

/// Lets the request go on: counts it and resumes it when it was held (`held`: the callback that
/// decided is not the request's own, so returning `Continue` would not release it).
pub fn finish(worker: &Worker, state: &RefCell<StreamState>, held: bool) -> proxy_wasm::types::Action {
    worker.metrics.allowed.inc();
    state.borrow_mut().phase = Phase::Forwarded;
    if held {
        worker.host.resume_request();
    }
    proxy_wasm::types::Action::Continue
}
