//! Account linking glue (`exchange::link` decides): what the client declared, remembered per session in
//! shared data for 2025-11-25 clients (they declare capabilities at `initialize` only), read from each
//! request's `_meta` for 2026-07-28 clients; and the elicitation answer when the backend says "not
//! linked".

use super::answer;
use super::host::Map;
use super::state::StreamState;
use super::worker::Worker;
use crate::exchange::link::{self, ClientEra};
use crate::exchange::{ExchangeError, Mode};
use crate::http_reply::LocalReply;
use crate::mcp::inspect::AllowedCall;
use crate::mcp::sessions::session_fingerprint;
use crate::outcome::{Denial, Reason};
use log::info;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

/// Sessions that declared URL elicitation are remembered in this many shared-data slots (Envoy's shared
/// data cannot delete keys): a session whose slot another one took answers like a client that did not
/// declare it (seed 001's error), never wrongly the other way.
const SLOTS: u64 = 1024;

fn slot_name(session_id: &str) -> String {
    let digest = Sha256::digest(session_id.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    format!("mcp_authz.v1.url_elicitation|{}", u64::from_be_bytes(prefix) % SLOTS)
}

fn links_accounts(worker: &Worker) -> bool {
    worker.config.credentials.targets.iter().any(|t| matches!(&t.mode, Mode::Connector(c) if c.link.is_some()))
}

/// An `initialize` on its way: note whether the client declares URL elicitation
/// (`params.capabilities.elicitation.url`), to remember it for the session the answer will name.
pub fn note_initialize(worker: &Worker, state: &RefCell<StreamState>, calls: &[AllowedCall], body: Option<&[u8]>) {
    if !calls.iter().any(|c| c.method == "initialize") || !links_accounts(worker) {
        return;
    }
    let Some(doc) = body.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else { return };
    let declares = |m: &Value| {
        m.get("method").and_then(Value::as_str) == Some("initialize")
            && m.pointer("/params/capabilities/elicitation/url").is_some_and(Value::is_object)
    };
    let declared = match &doc {
        Value::Array(items) => items.iter().any(declares),
        single => declares(single),
    };
    state.borrow_mut().declares_url_elicitation = declared;
}

/// The upstream named the session of an `initialize` whose client declared URL elicitation.
pub fn remember_session(worker: &Worker, state: &RefCell<StreamState>, session_id: Option<&str>) {
    let Some(session_id) = session_id.filter(|_| state.borrow().declares_url_elicitation) else { return };
    let record = session_fingerprint(session_id);
    let _ = worker.host.shared_set(&slot_name(session_id), record.as_bytes(), None);
}

/// What the client of this `tools/call` can be asked to do.
pub fn era(worker: &Worker, state: &RefCell<StreamState>, call: Option<&AllowedCall>) -> ClientEra {
    let header = worker.host.header(Map::RequestHeaders, "mcp-protocol-version");
    let declared = state.borrow().session_id.as_deref().is_some_and(|id| {
        let (bytes, _) = worker.host.shared_get(&slot_name(id));
        bytes.is_some_and(|b| b == session_fingerprint(id).as_bytes())
    });
    link::era(call.and_then(|c| c.meta.as_ref()), header.as_deref(), declared)
}

/// Answers an unlinked account with a URL elicitation when the target links accounts and the client
/// can follow one. False: not answered (the caller sends the exchange error).
pub fn answer(
    worker: &Worker,
    state: &RefCell<StreamState>,
    target: usize,
    era: ClientEra,
    e: &ExchangeError,
    id: &Value,
) -> bool {
    let Mode::Connector(c) = &worker.config.credentials.targets[target].mode else { return false };
    let Some(settings) = c.link.as_ref().filter(|_| e.link_required) else { return false };
    let user = state
        .borrow()
        .principal
        .as_ref()
        .and_then(|p| p.claim(&c.user_id_claim).and_then(Value::as_str).map(str::to_string));
    let Some(user) = user else { return false };
    let now = worker.now_ms() / 1000;
    let Some(body) = settings.answer(era, id, &user, &c.provider_id, now) else { return false };
    info!("account not linked: provider {:?}, answered with a URL elicitation ({era:?})", c.provider_id);
    let reply = LocalReply::json(200, body.to_string());
    answer::deny(worker, state, &Denial::new(Reason::ExchangeFailed, reply), None);
    true
}
