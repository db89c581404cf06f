//! Requests paused until something happens elsewhere, in one queue per worker VM: held for keys, waiting
//! for their body, following another request's exchange or introspection, waiting for another worker's.
//! The root's tick (and a finished JWKS fetch) drains the entries that are due (`drain.rs`); the others stay
//! where other code can find them (a leader that finishes takes its followers out).

use super::state::StreamState;
use crate::exchange::Callout;
use crate::exchange::plan::Step;
use std::cell::RefCell;
use std::rc::Weak;

/// What a parked request waits for.
pub enum Wait {
    /// Held until its provider's key set loads, or the deadline: then authenticated again, or refused.
    Keys {
        provider: usize,
        unknown_key: bool,
        /// The provider's completed-fetch count when the request started waiting.
        completed_at_start: u64,
    },
    /// An MCP POST whose body has not arrived: 408 at the deadline.
    Body,
    /// Following another request's exchange for the same key on this worker; 504 at the deadline.
    Follower,
    /// Waiting for another worker's exchange (leased until `lease_until_ms`): then its token, or an
    /// exchange of our own starting with `first` (which may take `timeout_ms`).
    RemoteExchange { first: Step, timeout_ms: u64, lease_until_ms: u64 },
    /// Following another request's introspection of the same token on this worker.
    IntrospectionFollower,
    /// Waiting for another worker's introspection of the same token.
    RemoteIntrospection { callout: Callout, lease_until_ms: u64 },
}

pub struct Parked {
    pub context_id: u32,
    pub stream: Weak<RefCell<StreamState>>,
    pub deadline_ms: u64,
    pub wait: Wait,
}

impl Parked {
    fn same(&self, other: &Parked) -> bool {
        self.context_id == other.context_id && std::mem::discriminant(&self.wait) == std::mem::discriminant(&other.wait)
    }
}

#[derive(Default)]
pub struct ParkedRequests(RefCell<Vec<Parked>>);

impl ParkedRequests {
    /// Parks a request; it replaces what the same request already waited for of the same kind.
    pub fn park(&self, parked: Parked) {
        let mut queue = self.0.borrow_mut();
        queue.retain(|p| !p.same(&parked));
        queue.push(parked);
    }

    /// Takes out the entries `due` says must be acted on now (the others stay). The queue is not
    /// borrowed while the caller acts on them: acting makes hostcalls that may park requests again.
    pub fn take_where(&self, mut due: impl FnMut(&Parked) -> bool) -> Vec<Parked> {
        let mut queue = self.0.borrow_mut();
        let (taken, kept): (Vec<Parked>, Vec<Parked>) = queue.drain(..).partition(|p| due(p));
        *queue = kept;
        taken
    }

    /// The request's body is complete: its `Wait::Body` entry has nothing left to wait for.
    pub fn body_arrived(&self, context_id: u32) {
        self.0.borrow_mut().retain(|p| !(p.context_id == context_id && matches!(p.wait, Wait::Body)));
    }

    /// Makes the matching entries due at the next drain.
    pub fn expire_where(&self, matches: impl Fn(&Parked) -> bool) {
        for p in self.0.borrow_mut().iter_mut().filter(|p| matches(p)) {
            p.deadline_ms = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}
