//! The exchange glue: obtaining the upstream credential of a request that has been authorized — a cached
//! token, a minted internal token, or a callout (one per key at a time: later requests for the same key
//! follow it, on this worker through the worker's cache, on other workers through the process-wide slots
//! of `exchange::shared`). Then `Authorization` (and, where configured, the body) is rewritten and the
//! request goes on. Decisions are `crate::exchange`'s.

use super::answer::{self, fingerprint};
use super::host::{Buffer, CalloutRequest, Map};
use super::keys::compare_and_swap_cas;
use super::parked::{Parked, Wait};
use super::state::{CredentialWait, Phase, StreamState};
use super::worker::Worker;
use crate::exchange::cache::{Key, Lookup};
use crate::exchange::plan::{self, Step};
use crate::exchange::shared::{self, Found, Slot, Slots};
use crate::exchange::{self, Callout, ExchangeError, Failure, Issued, Mode};
use crate::http_reply::LocalReply;
use crate::mcp::inspect::AllowedCall;
use crate::outcome::{Denial, Reason};
use log::{info, warn};
use proxy_wasm::types::{Action, Status};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// Exchange responses larger than this are not read (a token response is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What the process-wide slot says about a key this worker is about to call out for.
pub(super) enum Claim {
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

/// After authorization: forward as is, or obtain the configured credential first.
pub fn obtain(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    calls: &[AllowedCall],
    body: Option<Vec<u8>>,
    held: bool,
) -> Action {
    let config = worker.config.clone();
    let (context_id, principal, token) = {
        let s = state.borrow();
        (s.context_id, s.principal.clone(), s.token.clone())
    };
    let (Some(principal), Some(token)) = (principal, token) else { return Action::Pause };
    super::link::note_initialize(worker, state, calls, body.as_deref());
    let plan = match plan::plan(&config.credentials, calls, &principal, &token) {
        Ok(None) => {
            state.borrow_mut().decided.credential = Some("passthrough");
            return answer::finish(worker, state, held);
        }
        Ok(Some(plan)) => {
            state.borrow_mut().decided.credential = Some(config.credentials.targets[plan.target].mode.name());
            plan
        }
        Err(e) => {
            let id = calls.first().and_then(|c| c.id.clone()).unwrap_or(Value::Null);
            let target = calls.first().and_then(|c| config.credentials.resolve(c.credential.as_deref()));
            let provider = target.map_or("-", |t| config.credentials.targets[t].provider_label());
            fail(worker, state, &e, &id, provider);
            return Action::Pause;
        }
    };
    let now = worker.now_ms();
    let lookup = worker.exchange_cache.borrow_mut().lookup(&plan.key, now, context_id);
    let mut wait = CredentialWait {
        target: plan.target,
        chain: plan.chain,
        stage: 0,
        key: plan.key,
        era: match &config.credentials.targets[plan.target].mode {
            Mode::Connector(c) if c.link.is_some() => super::link::era(worker, state, calls.first()),
            _ => crate::exchange::link::ClientEra::Plain,
        },
        id: plan.id,
        body,
        callout: None,
        shared: None,
        leased: false,
        waits_remote: false,
        started_ms: now,
    };
    state.borrow_mut().phase = Phase::ObtainingCredential;
    match lookup {
        Lookup::Hit(upstream_token) => {
            worker.metrics.exchange_cache_hit.inc();
            apply(worker, state, plan.target, &upstream_token, wait.body.as_deref());
            answer::finish(worker, state, held)
        }
        Lookup::Follow => {
            worker.metrics.exchange_cache_miss.inc();
            worker.parked.park(Parked {
                context_id,
                stream: Rc::downgrade(state),
                // Long enough for a leader that waits on another worker and then calls out itself.
                deadline_ms: now + 2 * (plan.timeout_ms + 1_000),
                wait: Wait::Follower,
            });
            state.borrow_mut().credential = Some(wait);
            Action::Pause
        }
        Lookup::Lead => {
            worker.metrics.exchange_cache_miss.inc();
            if let Some(basis) = Some(&plan.shared_basis).filter(|b| !b.is_empty() && worker.exchange_slots.count > 0) {
                let key = shared::shared_key(&wait.key, basis);
                wait.shared = Some(key);
                match claim(worker, worker.exchange_slots, &key, now, now + plan.timeout_ms + 1_000) {
                    Claim::Token { token, usable_until_ms } => {
                        state.borrow_mut().credential = Some(wait);
                        settle_shared(worker, state, &token, usable_until_ms, held);
                        return Action::Continue;
                    }
                    Claim::Wait { until_ms } => {
                        wait.waits_remote = true;
                        state.borrow_mut().credential = Some(wait);
                        worker.parked.park(Parked {
                            context_id,
                            stream: Rc::downgrade(state),
                            deadline_ms: now + 2 * (plan.timeout_ms + 1_000),
                            wait: Wait::RemoteExchange {
                                first: plan.step,
                                timeout_ms: plan.timeout_ms,
                                lease_until_ms: until_ms,
                            },
                        });
                        return Action::Pause;
                    }
                    Claim::Lead { leased } => wait.leased = leased,
                }
            }
            start(worker, state, wait, plan.step, held)
        }
    }
}

/// The leader begins its exchange: mints the first token or calls out for it.
fn start(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    wait: CredentialWait,
    step: Step,
    held: bool,
) -> Action {
    match step {
        Step::Callout(callout) => dispatch(worker, state, wait, &callout, held),
        Step::Mint => {
            let Mode::Internal(settings) = &worker.config.credentials.targets[wait.chain[0]].mode else {
                return Action::Pause;
            };
            let (context_id, principal, token) = {
                let s = state.borrow();
                (s.context_id, s.principal.clone(), s.token.clone().unwrap_or_default())
            };
            let Some(principal) = principal else { return Action::Pause };
            let now = worker.now_ms();
            let jti = fingerprint(&format!("{token}|{now}|{context_id}"));
            let issued = settings.mint(&principal, (now / 1000) as i64, &jti);
            state.borrow_mut().credential = Some(wait);
            if next_step(worker, state, &issued.token, held) {
                return Action::Pause;
            }
            settle_flight(worker, state, Ok(issued), held);
            Action::Continue
        }
    }
}

/// After a step of a chain gave `token`: calls out for the next step, presenting it. False when the step
/// was the last one (the caller settles the flight with the token).
fn next_step(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, token: &str, held: bool) -> bool {
    let Some(mut wait) = state.borrow_mut().credential.take() else { return true };
    let Some(&next) = wait.chain.get(wait.stage + 1) else {
        state.borrow_mut().credential = Some(wait);
        return false;
    };
    let Some(callout) = plan::callout_for(&worker.config.credentials, next, token) else {
        state.borrow_mut().credential = Some(wait);
        return false; // unreachable: load only chains targets that call out with an assertion
    };
    wait.stage += 1;
    wait.started_ms = worker.now_ms();
    dispatch(worker, state, wait, &callout, held);
    true
}

/// Makes the exchange callout for the stream whose context is effective; its answer settles the flight.
fn dispatch(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    mut wait: CredentialWait,
    callout: &Callout,
    held: bool,
) -> Action {
    match worker.host.dispatch(&CalloutRequest::of(callout)) {
        Ok(token_id) => {
            // Registered with the worker: when this runs from the root context (a request that waited
            // for keys, or for another worker's exchange), the answer is delivered to the root.
            let context_id = state.borrow().context_id;
            worker.exchange_callouts.borrow_mut().insert(token_id, (context_id, Rc::downgrade(state)));
            wait.callout = Some(token_id);
            state.borrow_mut().credential = Some(wait);
            Action::Pause
        }
        Err(status) => {
            warn!(
                "token exchange callout to cluster {:?} refused ({status:?}); is the cluster defined?",
                callout.cluster
            );
            state.borrow_mut().credential = Some(wait);
            let e = ExchangeError::new(
                502,
                Failure::ApiError,
                "Token exchange failed",
                "the exchange cluster is not available",
            );
            settle_flight(worker, state, Err(e), held);
            Action::Pause
        }
    }
}

/// Reads the process-wide slot for `key`; takes its lease (compare-and-swap) when it is free.
/// `slots`: the process-wide slots the caller's records spread over.
pub(super) fn claim(worker: &Worker, slots: Slots, key: &Key, now: u64, lease_until_ms: u64) -> Claim {
    let (name, hex) = (shared::slot_name(key, slots), shared::key_hex(key));
    for _ in 0..2 {
        let (bytes, cas) = worker.host.shared_get(&name);
        match Slot::decode(bytes.as_deref()).find(&hex, now) {
            Found::Token { token, usable_until_ms } => return Claim::Token { token, usable_until_ms },
            Found::Leased { until_ms } => return Claim::Wait { until_ms },
            Found::Free => {
                // A slot used for the first time does not exist yet: without a cas two workers could both
                // take the lease and both call out.
                let lease = Slot::leased(&hex, lease_until_ms).encode();
                match worker.host.shared_set(&name, &lease, compare_and_swap_cas(cas)) {
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
pub(super) fn publish(worker: &Worker, slots: Slots, key: &Key, token: Option<(&str, u64)>) {
    let (name, hex) = (shared::slot_name(key, slots), shared::key_hex(key));
    match token {
        Some((token, usable_until_ms)) => {
            let _ = worker.host.shared_set(&name, &Slot::filled(&hex, token, usable_until_ms).encode(), None);
        }
        None => {
            let (bytes, cas) = worker.host.shared_get(&name);
            if Slot::decode(bytes.as_deref()).is_lease_of(&hex) {
                let _ = worker.host.shared_set(&name, &Slot::default().encode(), cas);
            }
        }
    }
}

/// A callout answered, delivered to whichever context the host registered it with. Returns false if the
/// token is not an exchange callout. Reads the answer, then settles it under the leader's context.
pub fn on_callout(worker: &Rc<Worker>, token_id: u32, num_headers: usize, body_size: usize) -> bool {
    let Some((context_id, stream)) = worker.exchange_callouts.borrow_mut().remove(&token_id) else { return false };
    let host = worker.host.as_ref();
    let status = if num_headers == 0 { None } else { host.header(Map::CalloutResponseHeaders, ":status") };
    let body = host.buffer(Buffer::CalloutResponseBody, 0, body_size.min(MAX_RESPONSE_BYTES));
    let Some(state) = stream.upgrade() else { return true };
    if !host.enter(context_id) {
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
        match &s.credential {
            Some(w) if w.callout == Some(token_id) => (w.chain[w.stage], w.started_ms),
            _ => return,
        }
    };
    let credentials = &worker.config.credentials;
    let result = match status.and_then(|s| s.parse::<u16>().ok()) {
        None => {
            Err(exchange::no_response(worker.now_ms().saturating_sub(started), credentials.targets[target].timeout_ms))
        }
        Some(code) => plan::answer_of(credentials, target, code, body),
    };
    if let Ok(issued) = &result {
        if let Some(w) = state.borrow_mut().credential.as_mut() {
            w.callout = None;
        }
        if next_step(worker, state, &issued.token, true) {
            return;
        }
    }
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
    let Some(wait) = state.borrow_mut().credential.take() else { return };
    let now = worker.now_ms();
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
    let followers = worker.exchange_cache.borrow_mut().complete(&wait.key, usable_until);
    if let Some(key) = &wait.shared
        && (wait.leased || usable_until.is_some())
    {
        publish(worker, worker.exchange_slots, key, usable_until);
    }
    match &result {
        Ok(_) => worker.metrics.exchange_ok.inc(),
        Err(e) => worker.metrics.count_exchange_failure(e.error),
    }
    conclude(worker, state, &wait, &result, held);
    answer_followers(worker, &followers, &result);
}

/// Ends the flight of the stream whose context is effective with a token another worker obtained.
fn settle_shared(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, token: &str, usable_until_ms: u64, held: bool) {
    let Some(wait) = state.borrow_mut().credential.take() else { return };
    let followers = worker.exchange_cache.borrow_mut().complete(&wait.key, Some((token, usable_until_ms)));
    let result = Ok(Issued { token: token.to_string(), lifetime_seconds: None });
    conclude(worker, state, &wait, &result, held);
    answer_followers(worker, &followers, &result);
}

/// Answers this worker's followers of a key (context ids from the cache) with the flight's result.
fn answer_followers(worker: &Rc<Worker>, followers: &[u32], result: &Result<Issued, ExchangeError>) {
    let mine = worker.parked.take_where(|p| matches!(p.wait, Wait::Follower) && followers.contains(&p.context_id));
    for follower in mine {
        let Some(fstate) = follower.stream.upgrade() else { continue };
        if !worker.host.enter(follower.context_id) {
            continue;
        }
        let Some(fwait) = fstate.borrow_mut().credential.take() else { continue };
        conclude(worker, &fstate, &fwait, result, true);
    }
}

fn conclude(
    worker: &Worker,
    state: &RefCell<StreamState>,
    wait: &CredentialWait,
    result: &Result<Issued, ExchangeError>,
    held: bool,
) {
    match result {
        Ok(issued) => {
            apply(worker, state, wait.target, &issued.token, wait.body.as_deref());
            answer::finish(worker, state, held);
        }
        Err(e) => {
            if super::link::answer(worker, state, wait.target, wait.era, e, &wait.id) {
                return;
            }
            let provider = worker.config.credentials.targets[wait.target].provider_label().to_string();
            fail(worker, state, e, &wait.id, &provider);
        }
    }
}

/// Rewrites the request for the upstream: its own credential, never the client's token.
fn apply(worker: &Worker, state: &RefCell<StreamState>, target: usize, upstream_token: &str, body: Option<&[u8]>) {
    let config = &worker.config;
    let host = worker.host.as_ref();
    let t = &config.credentials.targets[target];
    if config.token.header != "authorization" {
        host.set_header(Map::RequestHeaders, &config.token.header, None);
    }
    host.set_header(Map::RequestHeaders, "authorization", Some(&format!("Bearer {upstream_token}")));
    let remove_user_token = matches!(t.mode, Mode::Connector(_));
    let inject = t.inject_meta_key.as_deref().map(|k| (k, upstream_token));
    if let Some(body) = body
        && let Some(new_body) = plan::rewrite_body(body, remove_user_token, inject)
    {
        host.set_buffer(Buffer::RequestBody, 0, body.len(), &new_body);
        host.set_header(Map::RequestHeaders, "content-length", Some(&new_body.len().to_string()));
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
    warn!("token exchange failed for provider {provider:?}: {} ({}): {:?}", e.error.name(), e.status, e.details);
    answer::deny(worker, state, &Denial::new(Reason::ExchangeFailed, reply), None);
}

/// A stream is going away: if it led a callout (or waited on another worker's for this worker), its
/// followers must not wait for an answer that will not come. They are answered at the next drain.
pub fn abandon(worker: &Worker, state: &RefCell<StreamState>) {
    let Ok(mut s) = state.try_borrow_mut() else { return };
    let Some(wait) = s.credential.take() else { return };
    if wait.callout.is_some() || wait.waits_remote {
        if let Some(token_id) = wait.callout {
            worker.exchange_callouts.borrow_mut().remove(&token_id);
            if let Some(key) = wait.shared.as_ref().filter(|_| wait.leased) {
                publish(worker, worker.exchange_slots, key, None);
            }
        }
        let orphans = worker.exchange_cache.borrow_mut().complete(&wait.key, None);
        worker.parked.expire_where(|p| matches!(p.wait, Wait::Follower) && orphans.contains(&p.context_id));
    } else {
        worker.exchange_cache.borrow_mut().forget(s.context_id);
    }
}

/// From the drain: a stream waiting on another worker's exchange whose lease (or deadline) ran out —
/// settled with that worker's token, or by calling out itself. Returns the entry if it must wait on.
pub fn poll_remote(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    mut parked: Parked,
    now: u64,
) -> Option<Parked> {
    let key = match &state.borrow().credential {
        Some(CredentialWait { waits_remote: true, shared: Some(key), .. }) => *key,
        _ => return None,
    };
    let Wait::RemoteExchange { first, timeout_ms, lease_until_ms } = &mut parked.wait else { return None };
    if !worker.host.enter(parked.context_id) {
        return None;
    }
    match claim(worker, worker.exchange_slots, &key, now, now + *timeout_ms + 1_000) {
        Claim::Token { token, usable_until_ms } => settle_shared(worker, state, &token, usable_until_ms, true),
        Claim::Wait { until_ms } if now < parked.deadline_ms => {
            *lease_until_ms = until_ms.min(parked.deadline_ms);
            return Some(parked);
        }
        Claim::Wait { .. } => {
            let e = ExchangeError::new(
                504,
                Failure::ApiError,
                "Token exchange timed out",
                "the exchange in progress did not complete",
            );
            settle_flight(worker, state, Err(e), true);
        }
        Claim::Lead { leased } => {
            let mut wait = state.borrow_mut().credential.take()?;
            wait.waits_remote = false;
            wait.leased = leased;
            wait.started_ms = now;
            start(worker, state, wait, first.clone(), true);
        }
    }
    None
}

/// From the drain: a follower whose wait is over (leader gone, or past the deadline): 504.
pub fn expire_follower(worker: &Worker, state: &RefCell<StreamState>, context_id: u32) {
    worker.exchange_cache.borrow_mut().forget(context_id);
    if !worker.host.enter(context_id) {
        return;
    }
    let Some(wait) = state.borrow_mut().credential.take() else { return };
    let provider = worker.config.credentials.targets[wait.target].provider_label().to_string();
    let e = ExchangeError::new(
        504,
        Failure::ApiError,
        "Token exchange timed out",
        "the exchange in progress did not complete",
    );
    worker.metrics.count_exchange_failure(e.error);
    fail(worker, state, &e, &wait.id, &provider);
}
