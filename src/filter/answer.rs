//! The three ways a request ends for the filter: answered locally ([`send`]), refused ([`deny`]: counted,
//! logged, exported, answered), or let through ([`finish`]: counted, exported, resumed if it was held).

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

/// Answers the effective stream locally; `details` shows in Envoy's `%RESPONSE_CODE_DETAILS%`.
pub fn send(host: &dyn Host, reply: &LocalReply, details: &str) {
    if !host.send_reply(reply, details) {
        warn!("could not send local reply {}", reply.status);
    }
}

/// Sends the denial, counts it, logs it (with a token fingerprint, never the token) and exports it.
pub fn deny(worker: &Worker, state: &RefCell<StreamState>, denial: &Denial, token: Option<&str>) {
    worker.metrics.count_denial(denial.reason);
    let (method, path) = {
        let mut s = state.borrow_mut();
        s.phase = Phase::Answered;
        s.decided.allowed = Some(false);
        s.decided.reason = Some(denial.reason.name());
        s.decided.shadow = false;
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
    refuse(worker, state, &denial.reply, denial.reason.name());
}

/// Exports the refusal recorded in the stream's state, then sends `reply`: filter state set after the
/// local reply would not reach the access log.
pub fn refuse(worker: &Worker, state: &RefCell<StreamState>, reply: &LocalReply, reason: &str) {
    export(worker, state);
    send(worker.host.as_ref(), reply, &format!("mcp_authz_{reason}"));
}

/// Lets the request go on: counts it, exports it, and resumes it when it was held (`held`: the callback
/// that decided is not the request's own, so returning `Continue` would not release it).
pub fn finish(worker: &Worker, state: &RefCell<StreamState>, held: bool) -> proxy_wasm::types::Action {
    worker.metrics.allowed.inc();
    {
        let mut s = state.borrow_mut();
        s.phase = Phase::Forwarded;
        s.decided.allowed = Some(true);
        if s.decided.reason.is_none() {
            s.decided.reason = Some("allowed");
        }
    }
    export(worker, state);
    if held {
        worker.host.resume_request();
    }
    proxy_wasm::types::Action::Continue
}

/// Sets the configured fields of the decision as filter state (`crate::export`).
fn export(worker: &Worker, state: &RefCell<StreamState>) {
    if worker.config.decision_export.is_empty() {
        return;
    }
    let s = state.borrow();
    for field in &worker.config.decision_export {
        if let Some(value) = s.decided.value(*field) {
            worker.host.set_property(field.property(), value.as_bytes());
        }
    }
}
