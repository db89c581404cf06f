//! Obtaining the upstream credential for a request that has been authorized: a cached token, a minted
//! internal token, or a callout (one per key at a time: later requests for the same key follow it — on
//! this worker through the worker's cache, on other workers through the process-wide slots of
//! `exchange::shared`). Then `Authorization` (and, where configured, the body) is rewritten and the
//! request resumes.

use super::stream::{self, StreamState};
use super::worker::Worker;
use super::{compare_and_swap_cas, fingerprint, now_ms};
use crate::authn::Denial;
use crate::exchange::cache::{Key, Lookup};
use crate::exchange::plan::{self, Step};
use crate::exchange::shared::{self, Found, Slot};
use crate::exchange::{self, Callout, ExchangeError, Issued, Mode, connector, rfc8693};
use crate::http_reply::LocalReply;
use crate::mcp::inspect::AllowedCall;
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType, Status};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Exchange responses larger than this are not read (a token response is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A request waiting for its credential.
pub struct Pending {
    pub target: usize,
    pub key: Key,
    /// JSON-RPC id for error answers.
    pub id: Value,
    /// The body to rewrite once the token is known (connector, `inject_meta_key`).
    pub body: Option<Vec<u8>>,
    /// The callout this stream leads, if it leads one.
    pub callout: Option<u32>,
    /// The process-wide key (`exchange::shared`) this stream leases or waits for.
    pub shared: Option<Key>,
    /// This stream holds the lease on `shared` (so it frees it if its exchange fails).
    pub leased: bool,
    /// Waiting for another worker's callout (polled from the root's tick).
    pub waits_remote: bool,
    pub started_ms: u64,
}

/// A stream whose key another worker is exchanging: it leads this worker's followers for the key, and
/// calls out itself if the other worker's lease ends without a token.
pub struct RemoteWait {
    pub context_id: u32,
    pub stream: Weak<RefCell<StreamState>>,
    pub callout: Callout,
    /// Until when the other worker's lease holds.
    pub lease_until_ms: u64,
    /// After this the request is answered 504, whatever the slot says.
    pub deadline_ms: u64,
}

/// What the process-wide slot says about a key this worker is about to exchange.
enum Claim {
    Token {
        token: String,
        usable_until_ms: u64,
    },
    Wait {
        until_ms: u64,
    },
    /// Call out (holding the lease, or without one when the slot could not be taken).
    Lead {
        leased: bool,
    },
}

/// A request following another's callout for the same key.
pub struct Follower {
    pub context_id: u32,
    pub stream: Weak<RefCell<StreamState>>,
    pub deadline_ms: u64,
}

/// After authorization: forward as is, or obtain the configured credential first.
pub fn obtain(
    worker: &Rc<Worker>,
    context_id: u32,
    state: &Rc<RefCell<StreamState>>,
    calls: &[AllowedCall],
    body: Option<Vec<u8>>,
    held: bool,
) -> Action {
    let config = worker.config.clone();
    let (principal, token) = {
        let s = state.borrow();
        (s.principal.clone(), s.token.clone())
    };
    let (Some(principal), Some(token)) = (principal, token) else { return Action::Pause };
    let plan = match plan::plan(&config.credentials, calls, &principal, &token) {
        Ok(None) => return stream::finish(worker, state, held),
        Ok(Some(plan)) => plan,
        Err(e) => {
            let id = calls.first().and_then(|c| c.id.clone()).unwrap_or(Value::Null);
            let target = calls.first().and_then(|c| config.credentials.resolve(c.credential.as_deref()));
            let provider = target.map_or("-", |t| config.credentials.targets[t].provider_label());
            fail(worker, state, &e, &id, provider);
            return Action::Pause;
        }
    };
    let target = &config.credentials.targets[plan.target];
    let now = now_ms();
    let lookup = worker.exchange_cache.borrow_mut().lookup(&plan.key, now, context_id);
    let mut pending = Pending {
        target: plan.target,
        key: plan.key,
        id: plan.id,
        body,
        callout: None,
        shared: None,
        leased: false,
        waits_remote: false,
        started_ms: now,
    };
    match lookup {
        Lookup::Hit(upstream_token) => {
            worker.metrics.exchange_cache_hit.inc();
            apply(worker, state, plan.target, &upstream_token, pending.body.as_deref());
            stream::finish(worker, state, held)
        }
        Lookup::Follow => {
            worker.metrics.exchange_cache_miss.inc();
            worker.exchange_followers.borrow_mut().push(Follower {
                context_id,
                stream: Rc::downgrade(state),
                // Long enough for a leader that waits on another worker and then calls out itself.
                deadline_ms: now + 2 * (target.timeout_ms + 1_000),
            });
            state.borrow_mut().exchange = Some(pending);
            Action::Pause
        }
        Lookup::Lead => match plan.step {
            Step::Mint => {
                worker.metrics.exchange_cache_miss.inc();
                let Mode::Internal(settings) = &target.mode else { return Action::Pause };
                let jti = fingerprint(&format!("{token}|{now}|{context_id}"));
                let issued = settings.mint(&principal, (now / 1000) as i64, &jti);
                state.borrow_mut().exchange = Some(pending);
                settle_flight(worker, state, Ok(issued), held);
                Action::Continue
            }
            Step::Callout(callout) => {
                if worker.exchange_slots > 0 {
                    let key = shared::shared_key(&pending.key, &callout);
                    pending.shared = Some(key);
                    match claim(worker, &key, now, now + callout.timeout_ms + 1_000) {
                        Claim::Token { token, usable_until_ms } => {
                            worker.metrics.exchange_cache_hit.inc();
                            state.borrow_mut().exchange = Some(pending);
                            settle_shared(worker, state, &token, usable_until_ms, held);
                            return Action::Continue;
                        }
                        Claim::Wait { until_ms } => {
                            worker.metrics.exchange_cache_miss.inc();
                            pending.waits_remote = true;
                            state.borrow_mut().exchange = Some(pending);
                            worker.remote_waits.borrow_mut().push(RemoteWait {
                                context_id,
                                stream: Rc::downgrade(state),
                                deadline_ms: now + 2 * (callout.timeout_ms + 1_000),
                                callout,
                                lease_until_ms: until_ms,
                            });
                            return Action::Pause;
                        }
                        Claim::Lead { leased } => pending.leased = leased,
                    }
                }
                worker.metrics.exchange_cache_miss.inc();
                dispatch(worker, context_id, state, pending, &callout, held)
            }
        },
    }
}

/// Makes the exchange callout for the stream whose context is effective; its answer settles the flight.
fn dispatch(
    worker: &Rc<Worker>,
    context_id: u32,
    state: &Rc<RefCell<StreamState>>,
    mut pending: Pending,
    callout: &Callout,
    held: bool,
) -> Action {
    let headers: Vec<(&str, &str)> = callout.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let timeout = Duration::from_millis(callout.timeout_ms);
    match hostcalls::dispatch_http_call(&callout.cluster, headers, Some(&callout.body), vec![], timeout) {
        Ok(token_id) => {
            // Registered with the worker: when this runs from the root context (a request that waited
            // for keys, or for another worker's exchange), the SDK delivers the answer to the root.
            worker.exchange_callouts.borrow_mut().insert(token_id, (context_id, Rc::downgrade(state)));
            pending.callout = Some(token_id);
            state.borrow_mut().exchange = Some(pending);
            Action::Pause
        }
        Err(status) => {
            warn!(
                "token exchange callout to cluster {:?} refused ({status:?}); is the cluster defined?",
                callout.cluster
            );
            state.borrow_mut().exchange = Some(pending);
            let e =
                ExchangeError::new(502, "api_error", "Token exchange failed", "the exchange cluster is not available");
            settle_flight(worker, state, Err(e), held);
            Action::Pause
        }
    }
}

/// Reads the process-wide slot for `key`; takes its lease (compare-and-swap) when it is free.
fn claim(worker: &Worker, key: &Key, now: u64, lease_until_ms: u64) -> Claim {
    let (name, hex) = (shared::slot_name(key, worker.exchange_slots), shared::key_hex(key));
    for _ in 0..2 {
        let (slot, cas) = match hostcalls::get_shared_data(&name) {
            Ok((bytes, cas)) => (Slot::decode(bytes.as_deref()), cas),
            Err(_) => return Claim::Lead { leased: false },
        };
        match slot.find(&hex, now) {
            Found::Token { token, usable_until_ms } => return Claim::Token { token, usable_until_ms },
            Found::Leased { until_ms } => return Claim::Wait { until_ms },
            Found::Free => {
                // A slot used for the first time does not exist yet: without a cas two workers could both
                // take the lease and both call out.
                let cas = compare_and_swap_cas(cas);
                match hostcalls::set_shared_data(&name, Some(&Slot::leased(&hex, lease_until_ms).encode()), cas) {
                    Err(Status::CasMismatch) => continue, // another worker wrote first: read again
                    result => return Claim::Lead { leased: result.is_ok() },
                }
            }
        }
    }
    Claim::Lead { leased: false }
}

/// Publishes the outcome of this worker's exchange for `key`: the token for every worker, or (failure)
/// frees the lease so that a worker waiting on it calls out itself. Failures are never shared.
fn publish(worker: &Worker, key: &Key, token: Option<(&str, u64)>) {
    let (name, hex) = (shared::slot_name(key, worker.exchange_slots), shared::key_hex(key));
    match token {
        Some((token, usable_until_ms)) => {
            let _ = hostcalls::set_shared_data(&name, Some(&Slot::filled(&hex, token, usable_until_ms).encode()), None);
        }
        None => {
            if let Ok((bytes, cas)) = hostcalls::get_shared_data(&name)
                && Slot::decode(bytes.as_deref()).is_lease_of(&hex)
            {
                let _ = hostcalls::set_shared_data(&name, Some(&Slot::default().encode()), cas);
            }
        }
    }
}

/// A callout answered, delivered to whichever context the SDK registered it with. Returns false if the
/// token is not an exchange callout. Reads the answer, then settles it under the leader's context.
pub fn on_callout(worker: &Rc<Worker>, token_id: u32, num_headers: usize, body_size: usize) -> bool {
    let Some((context_id, stream)) = worker.exchange_callouts.borrow_mut().remove(&token_id) else { return false };
    let status = if num_headers == 0 {
        None
    } else {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten()
    };
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_RESPONSE_BYTES))
        .ok()
        .flatten()
        .unwrap_or_default();
    let Some(state) = stream.upgrade() else { return true };
    if hostcalls::set_effective_context(context_id).is_err() {
        return true;
    }
    on_response(worker, &state, token_id, status.as_deref(), &body);
    true
}

/// The leader's callout answered (status None: no response, e.g. connection failure).
fn on_response(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    token_id: u32,
    status: Option<&str>,
    body: &[u8],
) {
    let (target, started) = {
        let s = state.borrow();
        match &s.exchange {
            Some(p) if p.callout == Some(token_id) => (p.target, p.started_ms),
            _ => return,
        }
    };
    let t = &worker.config.credentials.targets[target];
    let result = match status.and_then(|s| s.parse::<u16>().ok()) {
        None => Err(exchange::no_response(now_ms().saturating_sub(started), t.timeout_ms)),
        Some(code) => match &t.mode {
            Mode::Rfc8693(s) => rfc8693::response(s, code, body),
            Mode::Connector(s) => connector::response(s, code, body),
            Mode::Internal(_) => return,
        },
    };
    settle_flight(worker, state, result, true);
}

/// Ends the flight of the stream whose context is effective: caches the result (here and for every
/// worker), answers this stream, then every follower (each under its own context).
fn settle_flight(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    result: Result<Issued, ExchangeError>,
    held: bool,
) {
    let Some(pending) = state.borrow_mut().exchange.take() else { return };
    let now = now_ms();
    let principal_exp_ms =
        state.borrow().principal.as_ref().and_then(|p| p.expires_at).map(|e| (e.max(0) as u64) * 1000);
    let usable_until = match &result {
        // Never reuse an exchanged token beyond the subject token's own expiry.
        Ok(issued) => {
            let own = issued.lifetime_seconds.unwrap_or(0) * 1000;
            let lifetime_ms = principal_exp_ms.map_or(own, |exp| own.min(exp.saturating_sub(now)));
            worker.exchange_cache.borrow().usable_until(now, lifetime_ms).map(|until| (issued.token.as_str(), until))
        }
        Err(_) => None,
    };
    let followers = worker.exchange_cache.borrow_mut().complete(&pending.key, usable_until);
    if let Some(key) = &pending.shared
        && (pending.leased || usable_until.is_some())
    {
        publish(worker, key, usable_until);
    }
    match &result {
        Ok(_) => worker.metrics.exchange_ok.inc(),
        Err(e) => worker.metrics.count_exchange_failure(e.error),
    }
    conclude(worker, state, &pending, &result, held);
    answer_followers(worker, &followers, &result);
}

/// Ends the flight of the stream whose context is effective with a token another worker obtained.
fn settle_shared(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, token: &str, usable_until_ms: u64, held: bool) {
    let Some(pending) = state.borrow_mut().exchange.take() else { return };
    let followers = worker.exchange_cache.borrow_mut().complete(&pending.key, Some((token, usable_until_ms)));
    let result = Ok(Issued { token: token.to_string(), lifetime_seconds: None });
    conclude(worker, state, &pending, &result, held);
    answer_followers(worker, &followers, &result);
}

/// Answers this worker's followers of a key (context ids from the cache) with the flight's result.
fn answer_followers(worker: &Rc<Worker>, followers: &[u32], result: &Result<Issued, ExchangeError>) {
    let mut waiting = std::mem::take(&mut *worker.exchange_followers.borrow_mut());
    let (mine, others): (Vec<Follower>, Vec<Follower>) =
        waiting.drain(..).partition(|f| followers.contains(&f.context_id));
    worker.exchange_followers.borrow_mut().extend(others);
    for follower in mine {
        let Some(fstate) = follower.stream.upgrade() else { continue };
        if hostcalls::set_effective_context(follower.context_id).is_err() {
            continue;
        }
        let Some(fpending) = fstate.borrow_mut().exchange.take() else { continue };
        conclude(worker, &fstate, &fpending, result, true);
    }
}

fn conclude(
    worker: &Worker,
    state: &RefCell<StreamState>,
    pending: &Pending,
    result: &Result<Issued, ExchangeError>,
    held: bool,
) {
    match result {
        Ok(issued) => {
            apply(worker, state, pending.target, &issued.token, pending.body.as_deref());
            stream::finish(worker, state, held);
        }
        Err(e) => {
            let provider = worker.config.credentials.targets[pending.target].provider_label().to_string();
            fail(worker, state, e, &pending.id, &provider);
        }
    }
}

/// Rewrites the request for the upstream: its own credential, never the client's token.
fn apply(worker: &Worker, state: &RefCell<StreamState>, target: usize, upstream_token: &str, body: Option<&[u8]>) {
    let config = &worker.config;
    let t = &config.credentials.targets[target];
    if config.token.header != "authorization" {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &config.token.header, None);
    }
    let _ = hostcalls::set_map_value(
        MapType::HttpRequestHeaders,
        "authorization",
        Some(&format!("Bearer {upstream_token}")),
    );
    let remove_user_token = matches!(t.mode, Mode::Connector(_));
    let inject = t.inject_meta_key.as_deref().map(|k| (k, upstream_token));
    if let Some(body) = body
        && let Some(new_body) = plan::rewrite_body(body, remove_user_token, inject)
    {
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body.len(), &new_body);
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "content-length", Some(&new_body.len().to_string()));
    }
    let sub = state.borrow().principal.as_ref().and_then(|p| p.subject.clone()).unwrap_or_default();
    info!(
        "upstream credential from target {} for sub={:?} token={}",
        t.name,
        crate::clip::clip(&sub),
        fingerprint(upstream_token)
    );
}

fn fail(worker: &Worker, state: &RefCell<StreamState>, e: &ExchangeError, id: &Value, provider: &str) {
    let mut reply = LocalReply::json(e.status, e.to_jsonrpc(id, provider).to_string());
    if e.status == 401 {
        reply = reply.with_header("www-authenticate", "Bearer error=\"invalid_token\"".into());
    }
    // Debug formatting escapes control characters: details may quote client input (providerId).
    warn!("token exchange failed for provider {provider:?}: {} ({}): {:?}", e.error, e.status, e.details);
    stream::deny(worker, state, &Denial { reason: "exchange_failed", reply }, None);
}

/// A stream is going away: if it led a callout (or waited on another worker's for this worker), its
/// followers must not wait for an answer that will not come. They are answered on the next tick.
pub fn abandon(worker: &Worker, state: &RefCell<StreamState>) {
    let Ok(mut s) = state.try_borrow_mut() else { return };
    let Some(pending) = s.exchange.take() else { return };
    if pending.callout.is_some() || pending.waits_remote {
        if let Some(token_id) = pending.callout {
            worker.exchange_callouts.borrow_mut().remove(&token_id);
            if let Some(key) = pending.shared.as_ref().filter(|_| pending.leased) {
                publish(worker, key, None);
            }
        }
        let orphans = worker.exchange_cache.borrow_mut().complete(&pending.key, None);
        let mut followers = worker.exchange_followers.borrow_mut();
        for f in followers.iter_mut().filter(|f| orphans.contains(&f.context_id)) {
            f.deadline_ms = 0;
        }
    } else {
        worker.exchange_cache.borrow_mut().forget(s.context_id);
    }
}

/// From the root's tick: settles the streams waiting on another worker's exchange — with its token, or
/// by calling out themselves when its lease ended without one.
pub fn poll_remote_waits(worker: &Rc<Worker>, now: u64) {
    let waits = std::mem::take(&mut *worker.remote_waits.borrow_mut());
    let mut kept = Vec::with_capacity(waits.len());
    for mut wait in waits {
        let Some(state) = wait.stream.upgrade() else { continue };
        let key = match &state.borrow().exchange {
            Some(Pending { waits_remote: true, shared: Some(key), .. }) => *key,
            _ => continue,
        };
        if now < wait.lease_until_ms && now < wait.deadline_ms {
            kept.push(wait); // cheap: the slot is only read once the lease could have ended
            continue;
        }
        if hostcalls::set_effective_context(wait.context_id).is_err() {
            continue;
        }
        match claim(worker, &key, now, now + wait.callout.timeout_ms + 1_000) {
            Claim::Token { token, usable_until_ms } => settle_shared(worker, &state, &token, usable_until_ms, true),
            Claim::Wait { until_ms } if now < wait.deadline_ms => {
                wait.lease_until_ms = until_ms.min(wait.deadline_ms);
                kept.push(wait);
            }
            Claim::Wait { .. } => {
                let e = ExchangeError::new(
                    504,
                    "api_error",
                    "Token exchange timed out",
                    "the exchange in progress did not complete",
                );
                settle_flight(worker, &state, Err(e), true);
            }
            Claim::Lead { leased } => {
                let Some(mut pending) = state.borrow_mut().exchange.take() else { continue };
                pending.waits_remote = false;
                pending.leased = leased;
                dispatch(worker, wait.context_id, &state, pending, &wait.callout, true);
            }
        }
    }
    worker.remote_waits.borrow_mut().extend(kept);
}

/// From the root's tick: answers followers whose wait is over (leader gone, or past the timeout).
pub fn expire_followers(worker: &Rc<Worker>, now: u64) {
    let waiting = std::mem::take(&mut *worker.exchange_followers.borrow_mut());
    let mut kept = Vec::with_capacity(waiting.len());
    for f in waiting {
        let Some(state) = f.stream.upgrade() else { continue };
        if now < f.deadline_ms {
            kept.push(f);
            continue;
        }
        worker.exchange_cache.borrow_mut().forget(f.context_id);
        if hostcalls::set_effective_context(f.context_id).is_err() {
            continue;
        }
        let Some(pending) = state.borrow_mut().exchange.take() else { continue };
        let provider = worker.config.credentials.targets[pending.target].provider_label().to_string();
        let e = ExchangeError::new(
            504,
            "api_error",
            "Token exchange timed out",
            "the exchange in progress did not complete",
        );
        worker.metrics.count_exchange_failure(e.error);
        fail(worker, &state, &e, &pending.id, &provider);
    }
    worker.exchange_followers.borrow_mut().extend(kept);
}
