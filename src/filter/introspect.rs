//! The introspection glue: an opaque token's answer from this worker's cache, from another worker
//! (process-wide slots), or from a callout to the provider's RFC 7662 endpoint — one callout per token
//! per process at a time, through the exchange's single-flight (`ExchangeCache` on this worker, the
//! leases of `exchange::shared` across workers). Refusals are answered here; the callers
//! (`request`, `drain`, the callout handlers) go on with the requests whose tokens were [`Verified`].
//! Decisions are `crate::introspection`'s.

use super::answer::deny;
use super::exchange::{Claim, claim, publish};
use super::host::{Buffer, CalloutRequest, Map};
use super::parked::{Parked, Wait};
use super::state::{IntrospectionWait, StreamState};
use super::worker::Worker;
use crate::exchange::Callout;
use crate::exchange::cache::Lookup;
use crate::http_reply;
use crate::introspection::config::Settings;
use crate::introspection::{self, Answer, MAX_ANSWER_BYTES, MAX_CALLOUTS_IN_FLIGHT, Unavailable};
use crate::jwt::{Principal, Rejection};
use crate::outcome::{Denial, Reason};
use log::warn;
use std::cell::RefCell;
use std::rc::Rc;

/// A request whose token was introspected and accepted, for the caller to go on with (under its own
/// context, which the caller enters).
pub struct Verified {
    pub context_id: u32,
    pub stream: Rc<RefCell<StreamState>>,
    pub principal: Rc<Principal>,
}

/// What became of a request that started introspection.
pub enum Begun {
    Verified(Rc<Principal>),
    /// Waiting (for a callout, or another request's), or already refused.
    Pending,
}

fn settings(worker: &Worker, provider: usize) -> Option<&Settings> {
    worker.config.providers.get(provider)?.introspection.as_ref()
}

/// Starts (or, from a cache, finishes) the introspection of the stream's token for `provider`.
pub fn authenticate(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, token: &str, provider: usize) -> Begun {
    let Some(s) = settings(worker, provider) else { return Begun::Pending };
    let deadline_ms = worker.now_ms() + 2 * (s.timeout_ms + 1_000);
    start(worker, state, token, provider, deadline_ms)
}

fn start(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    token: &str,
    provider: usize,
    deadline_ms: u64,
) -> Begun {
    let Some(s) = settings(worker, provider) else { return Begun::Pending };
    if token.len() > worker.config.providers[provider].max_token_bytes {
        refuse(worker, state, Err(Rejection::TokenTooLarge));
        return Begun::Pending;
    }
    if !introspection::is_b64token(token) {
        refuse(worker, state, Err(Rejection::Malformed));
        return Begun::Pending;
    }
    let now = worker.now_ms();
    let key = introspection::cache_key(s, token);
    let context_id = state.borrow().context_id;
    let mut wait = IntrospectionWait { provider, key, callout: None, leased: false, waits_remote: false, deadline_ms };
    let lookup = worker.introspection_cache.borrow_mut().lookup(&key, now, context_id);
    match lookup {
        Lookup::Hit(cached) => {
            worker.metrics.introspection_cache_hit.inc();
            return judge(worker, state, provider, introspection::decode(&cached));
        }
        Lookup::Follow => {
            worker.metrics.introspection_cache_miss.inc();
            state.borrow_mut().introspection = Some(wait);
            let stream = Rc::downgrade(state);
            worker.parked.park(Parked { context_id, stream, deadline_ms, wait: Wait::IntrospectionFollower });
            return Begun::Pending;
        }
        Lookup::Lead => {}
    }
    let callout = introspection::request(s, token);
    if worker.introspection_slots.count > 0 {
        match fresh(s, claim(worker, worker.introspection_slots, &key, now, now + s.timeout_ms + 1_000), now) {
            Claim::Token { token: cached, usable_until_ms } => {
                worker.metrics.introspection_cache_hit.inc();
                worker.introspection_cache.borrow_mut().complete(&key, Some((&cached, usable_until_ms)));
                return judge(worker, state, provider, introspection::decode(&cached));
            }
            Claim::Wait { until_ms } => {
                worker.metrics.introspection_cache_miss.inc();
                wait.waits_remote = true;
                state.borrow_mut().introspection = Some(wait);
                worker.parked.park(Parked {
                    context_id,
                    stream: Rc::downgrade(state),
                    deadline_ms,
                    wait: Wait::RemoteIntrospection { callout, lease_until_ms: until_ms.min(deadline_ms) },
                });
                return Begun::Pending;
            }
            Claim::Lead { leased } => wait.leased = leased,
        }
    }
    worker.metrics.introspection_cache_miss.inc();
    dispatch(worker, state, wait, &callout).into_iter().next().map_or(Begun::Pending, |v| Begun::Verified(v.principal))
}

/// Makes the callout for the stream whose context is effective; its answer settles the flight.
fn dispatch(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    mut wait: IntrospectionWait,
    callout: &Callout,
) -> Vec<Verified> {
    if worker.introspection_callouts.borrow().len() >= MAX_CALLOUTS_IN_FLIGHT {
        state.borrow_mut().introspection = Some(wait);
        return settle(worker, state, Err(Unavailable::Busy), "", None);
    }
    let result = worker.host.dispatch(&CalloutRequest::of(callout));
    let context_id = state.borrow().context_id;
    if let Ok(token_id) = result {
        worker.introspection_callouts.borrow_mut().insert(token_id, (context_id, Rc::downgrade(state)));
        wait.callout = Some(token_id);
    }
    state.borrow_mut().introspection = Some(wait);
    match result {
        Ok(_) => Vec::new(),
        Err(_) => settle(worker, state, Err(Unavailable::Refused), "", None),
    }
}

/// A callout answered. None if it is not an introspection callout; else the requests to go on with.
pub fn on_callout(worker: &Rc<Worker>, token_id: u32, num_headers: usize, body_size: usize) -> Option<Vec<Verified>> {
    let (context_id, stream) = worker.introspection_callouts.borrow_mut().remove(&token_id)?;
    let host = worker.host.as_ref();
    let status = if num_headers == 0 { None } else { host.header(Map::CalloutResponseHeaders, ":status") };
    let status = status.map(|s| s.parse::<u16>().unwrap_or(0));
    let body =
        if body_size > MAX_ANSWER_BYTES { Vec::new() } else { host.buffer(Buffer::CalloutResponseBody, 0, body_size) };
    let answer = if body_size > MAX_ANSWER_BYTES {
        Err(Unavailable::Garbage)
    } else {
        introspection::read_answer(status, &body)
    };
    let kept = answer.as_ref().map_or_else(|_| String::new(), |a| introspection::cache_form(a, &body));
    let Some(state) = stream.upgrade() else { return Some(Vec::new()) };
    let ours = matches!(&state.borrow().introspection, Some(w) if w.callout == Some(token_id));
    if !ours || !host.enter(context_id) {
        return Some(Vec::new());
    }
    Some(settle(worker, &state, answer, &kept, None))
}

/// Ends the flight of the stream whose context is effective with the endpoint's answer (or its
/// absence; `kept`: the answer's cache form): keeps a usable answer here, publishes an active one for
/// every worker (an inactive one stays on this worker: random tokens must not evict real answers from
/// the shared slots), frees the lease otherwise, then judges the token for this stream and every
/// follower. `remote_until`: the answer is another worker's, reusable until then at most (not published).
fn settle(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    answer: Result<Answer, Unavailable>,
    kept: &str,
    remote_until: Option<u64>,
) -> Vec<Verified> {
    let Some(wait) = state.borrow_mut().introspection.take() else { return Vec::new() };
    let Some(s) = settings(worker, wait.provider) else { return Vec::new() };
    let now = worker.now_ms();
    let until = |a: &Answer| introspection::reusable_until_ms(s, a, now).map(|u| u.min(remote_until.unwrap_or(u)));
    let kept = answer.as_ref().ok().and_then(until).map(|until| (kept, until));
    let followers = worker.introspection_cache.borrow_mut().complete(&wait.key, kept);
    let shared = kept.filter(|_| matches!(answer, Ok(Answer::Active(_))));
    if remote_until.is_none() && worker.introspection_slots.count > 0 && (wait.leased || shared.is_some()) {
        publish(worker, worker.introspection_slots, &wait.key, shared);
    }
    match &answer {
        Ok(Answer::Active(_)) => worker.metrics.introspection_active.inc(),
        Ok(Answer::Inactive) => worker.metrics.introspection_inactive.inc(),
        Err(Unavailable::Busy) => worker.metrics.introspection_failed.inc(), // no log line per request
        Err(why) => {
            worker.metrics.introspection_failed.inc();
            warn!("token introspection at cluster {:?} failed: {}; answering 503", s.endpoint.cluster, why.describe());
        }
    }
    let mut verified = Vec::new();
    let context_id = state.borrow().context_id;
    if let Begun::Verified(principal) = judge(worker, state, wait.provider, answer.clone()) {
        verified.push(Verified { context_id, stream: state.clone(), principal });
    }
    let mine = worker
        .parked
        .take_where(|p| matches!(p.wait, Wait::IntrospectionFollower) && followers.contains(&p.context_id));
    for follower in mine {
        let Some(fstate) = follower.stream.upgrade() else { continue };
        if !worker.host.enter(follower.context_id) || fstate.borrow_mut().introspection.take().is_none() {
            continue;
        }
        if let Begun::Verified(principal) = judge(worker, &fstate, wait.provider, answer.clone()) {
            verified.push(Verified { context_id: follower.context_id, stream: fstate, principal });
        }
    }
    verified
}

/// The answer, checked as a JWT's claims would be, for the stream whose context is effective: its
/// principal, or a refusal sent here (401 for a refused token, 503 without a usable answer). A stream
/// already answered (its body timed out, say) is left alone: a second local reply breaks Envoy.
fn judge(worker: &Worker, state: &RefCell<StreamState>, provider: usize, answer: Result<Answer, Unavailable>) -> Begun {
    if state.borrow().phase.settled() {
        return Begun::Pending;
    }
    let now = (worker.now_ms() / 1000) as i64;
    // Sessions are bound to the caller's subject: callers without one would share each other's sessions.
    let unbindable = |p: &Principal| worker.config.mcp.sessions.bind && p.subject.is_none();
    let result = match answer {
        Ok(answer) => Ok(introspection::principal(answer, &worker.config.providers[provider], provider, now)
            .and_then(|p| if unbindable(&p) { Err(Rejection::BadClaim) } else { Ok(p) })),
        Err(why) => Err(why),
    };
    match result {
        Ok(Ok(principal)) => Begun::Verified(Rc::new(principal)),
        Ok(Err(why)) => {
            refuse(worker, state, Err(why));
            Begun::Pending
        }
        Err(why) => {
            refuse(worker, state, Ok(why));
            Begun::Pending
        }
    }
}

/// Refuses the effective stream: `Err`: the token (401), `Ok`: no usable answer (503, Retry-After).
fn refuse(worker: &Worker, state: &RefCell<StreamState>, why: Result<Unavailable, Rejection>) {
    let denial = match why {
        Err(rejection) => {
            Denial::new(Reason::Token(rejection), http_reply::invalid_token(&worker.config.challenge, rejection))
        }
        Ok(_) => Denial::new(Reason::IntrospectionUnavailable, http_reply::introspection_unavailable()),
    };
    let token = state.borrow().token.clone();
    deny(worker, state, &denial, token.as_deref());
}

/// Another worker's answer kept under a higher `max_ttl_seconds` (before a reload) is not reused: the
/// caller calls out (without the lease) and its answer replaces it.
fn fresh(s: &Settings, claimed: Claim, now: u64) -> Claim {
    match claimed {
        Claim::Token { usable_until_ms, .. } if !introspection::kept_within_max_ttl(s, usable_until_ms, now) => {
            Claim::Lead { leased: false }
        }
        claimed => claimed,
    }
}

/// From the drain: a stream waiting on another worker's introspection whose lease (or deadline) ran
/// out — settled with that worker's answer, or by calling out itself. Re-parks it if it must wait on.
pub fn poll_remote(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    mut parked: Parked,
    now: u64,
) -> Vec<Verified> {
    let (key, provider) = match &state.borrow().introspection {
        Some(IntrospectionWait { waits_remote: true, key, provider, .. }) => (*key, *provider),
        _ => return Vec::new(),
    };
    let Wait::RemoteIntrospection { callout, lease_until_ms } = &mut parked.wait else { return Vec::new() };
    if !worker.host.enter(parked.context_id) {
        return Vec::new();
    }
    let Some(s) = settings(worker, provider) else { return Vec::new() };
    match fresh(s, claim(worker, worker.introspection_slots, &key, now, now + callout.timeout_ms + 1_000), now) {
        Claim::Token { token: cached, usable_until_ms } => {
            settle(worker, state, introspection::decode(&cached), &cached, Some(usable_until_ms))
        }
        Claim::Wait { until_ms } if now < parked.deadline_ms => {
            *lease_until_ms = until_ms.min(parked.deadline_ms);
            worker.parked.park(parked);
            Vec::new()
        }
        Claim::Wait { .. } => settle(worker, state, Err(Unavailable::TimedOut), "", Some(0)),
        Claim::Lead { leased } => {
            let Some(mut wait) = state.borrow_mut().introspection.take() else { return Vec::new() };
            wait.waits_remote = false;
            wait.leased = leased;
            let callout = callout.clone();
            dispatch(worker, state, wait, &callout)
        }
    }
}

/// From the drain: a follower whose wait is over. Past its deadline: 503. Before it (the request it
/// followed went away): it starts again, leading or following anew, with the same deadline.
pub fn expire_follower(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    context_id: u32,
    now: u64,
) -> Vec<Verified> {
    worker.introspection_cache.borrow_mut().forget(context_id);
    if !worker.host.enter(context_id) {
        return Vec::new();
    }
    let Some(wait) = state.borrow_mut().introspection.take() else { return Vec::new() };
    let token = state.borrow().token.clone();
    match token {
        Some(token) if now < wait.deadline_ms => match start(worker, state, &token, wait.provider, wait.deadline_ms) {
            Begun::Verified(principal) => vec![Verified { context_id, stream: state.clone(), principal }],
            Begun::Pending => Vec::new(),
        },
        _ if state.borrow().phase.settled() => Vec::new(),
        _ => {
            worker.metrics.introspection_failed.inc();
            refuse(worker, state, Ok(Unavailable::TimedOut));
            Vec::new()
        }
    }
}

/// A stream is going away: if it led a callout (or waited on another worker's), its followers must not
/// wait for an answer that will not come: they start again at the next drain.
pub fn abandon(worker: &Worker, state: &RefCell<StreamState>) {
    let Ok(mut s) = state.try_borrow_mut() else { return };
    let Some(wait) = s.introspection.take() else { return };
    if wait.callout.is_none() && !wait.waits_remote {
        worker.introspection_cache.borrow_mut().forget(s.context_id);
        return;
    }
    if let Some(token_id) = wait.callout {
        worker.introspection_callouts.borrow_mut().remove(&token_id);
        if wait.leased {
            publish(worker, worker.introspection_slots, &wait.key, None);
        }
    }
    let orphans = worker.introspection_cache.borrow_mut().complete(&wait.key, None);
    worker.parked.expire_where(|p| matches!(p.wait, Wait::IntrospectionFollower) && orphans.contains(&p.context_id));
}
