//! The one drain of parked requests, run from the root's tick and after a JWKS fetch answered: every
//! entry whose wait is over is acted on under its own stream's context; the others stay parked.

use super::answer::deny;
use super::exchange;
use super::introspect;
use super::parked::{Parked, Wait};
use super::request;
use super::state::StreamState;
use super::worker::Worker;
use crate::authn;
use crate::mcp::jsonrpc_reply;
use crate::outcome::{Denial, Reason};
use log::warn;
use std::cell::RefCell;
use std::rc::Rc;

pub fn drain(worker: &Rc<Worker>, now: u64) {
    let due = worker.parked.take_where(|p| is_due(worker, p, now));
    for parked in due {
        let Some(state) = parked.stream.upgrade() else { continue }; // the stream is gone
        act(worker, &state, parked, now);
    }
}

fn is_due(worker: &Worker, parked: &Parked, now: u64) -> bool {
    let Some(state) = parked.stream.upgrade() else { return true };
    let timed_out = now >= parked.deadline_ms;
    match &parked.wait {
        Wait::Keys { provider, completed_at_start, .. } => {
            timed_out || worker.keys.completed_fetches(*provider) > *completed_at_start
        }
        Wait::Body => {
            let s = state.borrow();
            timed_out || s.phase.settled() || s.body.complete()
        }
        Wait::Follower | Wait::IntrospectionFollower => timed_out,
        // Cheap: the slot is only read once the other worker's lease could have ended.
        Wait::RemoteExchange { lease_until_ms, .. } | Wait::RemoteIntrospection { lease_until_ms, .. } => {
            timed_out || now >= *lease_until_ms
        }
    }
}

fn act(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, parked: Parked, now: u64) {
    let timed_out = now >= parked.deadline_ms;
    match parked.wait {
        Wait::Keys { provider, unknown_key, .. } => {
            if !worker.host.enter(parked.context_id) {
                return;
            }
            let token = state.borrow().token.clone();
            match token {
                Some(token) if !timed_out => {
                    request::authenticate(worker, state, &token, true, now);
                }
                _ => {
                    let have_keys = worker.authn.borrow().has_keys(provider);
                    let denial = authn::give_up(&worker.config.challenge, unknown_key, have_keys);
                    deny(worker, state, &denial, token.as_deref());
                }
            }
        }
        Wait::Body => {
            let waiting = {
                let s = state.borrow();
                !s.phase.settled() && !s.body.complete()
            };
            if !waiting || !worker.host.enter(parked.context_id) {
                return;
            }
            // If every MCP POST ends like this, Envoy is not delivering bodies to the filter while it
            // holds the headers. Never lets such a request through uninspected.
            warn!(
                "no complete request body within mcp.body_timeout_ms; answering 408. If every MCP POST fails \
                 like this, set allow_on_headers_stop_iteration: true in the Wasm filter's config"
            );
            let reply = jsonrpc_reply::request_error(408, "Request body not received in time");
            deny(worker, state, &Denial::new(Reason::BodyTimeout, reply), None);
        }
        Wait::Follower => exchange::expire_follower(worker, state, parked.context_id),
        Wait::RemoteExchange { .. } => {
            if let Some(again) = exchange::poll_remote(worker, state, parked, now) {
                worker.parked.park(again);
            }
        }
        Wait::IntrospectionFollower => {
            request::resume_verified(worker, introspect::expire_follower(worker, state, parked.context_id, now));
        }
        Wait::RemoteIntrospection { .. } => {
            request::resume_verified(worker, introspect::poll_remote(worker, state, parked, now));
        }
    }
}
