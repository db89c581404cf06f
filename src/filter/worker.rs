//! State of one worker VM, shared by its root context and its streams: configuration, keys, cache,
//! counters, the JWKS shared-data records, and the requests held while keys are fetched.

use super::compare_and_swap_cas;
use super::metrics::Metrics;
use super::stream::StreamState;
use crate::config::Config;
use crate::jwks::{self, Refetch, SharedState};
use crate::jwt::Authenticator;
use crate::jwt::jwk::KeySet;
use crate::jwt::provider::{JwksSource, RemoteJwks};
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

pub struct Worker {
    pub config: Rc<Config>,
    pub authn: RefCell<Authenticator>,
    pub metrics: Metrics,
    /// Per provider; `None` for inline key sets.
    pub remotes: Vec<Option<RemoteSlot>>,
    pub waiters: RefCell<Vec<Waiter>>,
    /// MCP POSTs whose body has not been decided yet, with the time after which they are answered 408.
    pub body_waits: RefCell<Vec<BodyWait>>,
    /// Exchanged upstream tokens, and the callouts in flight for them.
    pub exchange_cache: RefCell<crate::exchange::cache::ExchangeCache>,
    pub exchange_followers: RefCell<Vec<super::credentials::Follower>>,
    /// Exchange callouts in flight: token id → the stream that leads it.
    pub exchange_callouts: RefCell<std::collections::HashMap<u32, CalloutOwner>>,
    /// Process-wide exchange slots (`exchange::shared`); 0 when the exchange cache is off.
    pub exchange_slots: usize,
    /// Streams waiting for another worker's exchange.
    pub remote_waits: RefCell<Vec<super::credentials::RemoteWait>>,
}

/// The stream (context id and state) that leads an exchange callout.
pub type CalloutOwner = (u32, Weak<RefCell<StreamState>>);

pub struct BodyWait {
    pub context_id: u32,
    pub stream: Weak<RefCell<StreamState>>,
    pub deadline_ms: u64,
}

pub struct RemoteSlot {
    pub cfg: RemoteJwks,
    pub provider_name: String,
    state_key: String,
    keys_key: String,
    /// What this worker last saw of the shared record.
    pub seen_generation: Cell<u64>,
    pub seen_completed: Cell<u64>,
}

/// A request paused until keys arrive (or its deadline passes).
pub struct Waiter {
    pub context_id: u32,
    pub stream: Weak<RefCell<StreamState>>,
    pub provider: usize,
    pub deadline_ms: u64,
    pub unknown_key: bool,
    /// `completed` of the shared record when the request started waiting.
    pub completed_at_start: u64,
}

/// Bounded retries for a compare-and-swap that loses to other workers.
const CAS_ATTEMPTS: usize = 8;

impl Worker {
    pub fn new(config: Rc<Config>) -> Worker {
        let remotes = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Remote(cfg) => {
                    let (state_key, keys_key) = jwks::shared_keys(cfg);
                    Some(RemoteSlot {
                        cfg: cfg.clone(),
                        provider_name: p.name.clone(),
                        state_key,
                        keys_key,
                        seen_generation: Cell::new(0),
                        seen_completed: Cell::new(0),
                    })
                }
                JwksSource::Inline(_) => None,
            })
            .collect();
        let exchange_cache = crate::exchange::cache::ExchangeCache::new(
            config.credentials.cache_max_entries,
            config.credentials.cache_margin_seconds,
        );
        let config_slots = config.credentials.cache_max_entries.min(crate::exchange::shared::MAX_SLOTS);
        let metrics = Metrics::define(&config.mcp.policy);
        Worker {
            authn: RefCell::new(Authenticator::new(config.clone())),
            config,
            metrics,
            remotes,
            waiters: RefCell::new(Vec::new()),
            body_waits: RefCell::new(Vec::new()),
            exchange_cache: RefCell::new(exchange_cache),
            exchange_followers: RefCell::new(Vec::new()),
            exchange_callouts: RefCell::new(std::collections::HashMap::new()),
            exchange_slots: config_slots,
            remote_waits: RefCell::new(Vec::new()),
        }
    }

    pub fn slot(&self, provider: usize) -> Option<&RemoteSlot> {
        self.remotes.get(provider).and_then(Option::as_ref)
    }

    pub fn read_state(&self, slot: &RemoteSlot) -> (SharedState, Option<u32>) {
        match hostcalls::get_shared_data(&slot.state_key) {
            Ok((bytes, cas)) => (SharedState::decode(bytes.as_deref()), cas),
            Err(_) => (SharedState::default(), None),
        }
    }

    /// Compare-and-swap the shared record with `change`; `change` returning None means "leave it".
    pub fn update_state(
        &self,
        slot: &RemoteSlot,
        change: impl Fn(&SharedState) -> Option<SharedState>,
    ) -> Option<SharedState> {
        for _ in 0..CAS_ATTEMPTS {
            let (current, cas) = self.read_state(slot);
            let next = change(&current)?;
            match hostcalls::set_shared_data(&slot.state_key, Some(&next.encode()), compare_and_swap_cas(cas)) {
                Ok(()) => return Some(next),
                Err(Status::CasMismatch) => continue,
                Err(status) => {
                    warn!("shared data write failed for provider {}: {status:?}", slot.provider_name);
                    return None;
                }
            }
        }
        None
    }

    /// Creates the shared record if no VM has yet (first configure on the main thread).
    pub fn ensure_state(&self, slot: &RemoteSlot) {
        if let Ok((None, cas)) = hostcalls::get_shared_data(&slot.state_key) {
            // Create only: another VM may have created it (and a worker leased a fetch) since the read.
            let record = SharedState::default().encode();
            let _ = hostcalls::set_shared_data(&slot.state_key, Some(&record), compare_and_swap_cas(cas));
        }
    }

    /// Stores a fetched key set. `Some(changed)` once stored: a refresh that returns the very same
    /// document must not make every worker reload its keys and flush its token cache (a client could
    /// otherwise flush them at will, once per unknown-`kid` refetch interval). `None`: not stored.
    pub fn store_keys(&self, slot: &RemoteSlot, body: &[u8]) -> Option<bool> {
        if let Ok((Some(stored), _)) = hostcalls::get_shared_data(&slot.keys_key)
            && stored == body
        {
            return Some(false);
        }
        hostcalls::set_shared_data(&slot.keys_key, Some(body), None).is_ok().then_some(true)
    }

    /// Loads the shared key set into this worker when another VM (or this one) stored a new one.
    pub fn sync_keys(&self, provider: usize, slot: &RemoteSlot, state: &SharedState) {
        slot.seen_completed.set(state.completed);
        if state.generation == slot.seen_generation.get() {
            return;
        }
        let Ok((Some(bytes), _)) = hostcalls::get_shared_data(&slot.keys_key) else { return };
        match KeySet::parse(&bytes) {
            Ok(set) => {
                info!(
                    "provider {} now uses {} signing key(s) (generation {})",
                    slot.provider_name,
                    set.keys.len(),
                    state.generation
                );
                self.authn.borrow_mut().set_keys(provider, Rc::new(set));
                slot.seen_generation.set(state.generation);
            }
            // Only validated sets are stored, so this means a foreign writer; keep what we have.
            Err(e) => warn!("provider {}: shared key set unreadable: {e}", slot.provider_name),
        }
    }

    /// Loads the shared key set at once if another VM stored a newer one than this worker has (it would
    /// otherwise do so on its next tick). True when this worker's keys changed.
    pub fn sync_now(&self, provider: usize) -> bool {
        let Some(slot) = self.slot(provider) else { return false };
        let before = slot.seen_generation.get();
        let (state, _) = self.read_state(slot);
        self.sync_keys(provider, slot, &state);
        slot.seen_generation.get() != before
    }

    /// Asks for an early fetch because a token named a key we do not have.
    pub fn request_refetch(&self, provider: usize, now_ms: u64) -> Refetch {
        let Some(slot) = self.slot(provider) else { return Refetch::RateLimited };
        let (state, _) = self.read_state(slot);
        match state.refetch(now_ms, &slot.cfg) {
            Refetch::Scheduled(_) => {
                let scheduled = self.update_state(slot, |s| match s.refetch(now_ms, &slot.cfg) {
                    Refetch::Scheduled(next) => Some(next),
                    _ => None,
                });
                match scheduled {
                    Some(_) => {
                        self.metrics.jwks_refetch_unknown_kid.inc();
                        Refetch::Scheduled(state)
                    }
                    // Another worker changed the record first: it is fetching, or just did.
                    None => match self.read_state(slot).0.refetch(now_ms, &slot.cfg) {
                        Refetch::InFlight => Refetch::InFlight,
                        _ => Refetch::RateLimited,
                    },
                }
            }
            other => other,
        }
    }

    pub fn completed_fetches(&self, provider: usize) -> u64 {
        self.slot(provider).map_or(0, |s| s.seen_completed.get())
    }

    pub fn add_waiter(&self, waiter: Waiter) {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| w.context_id != waiter.context_id);
        waiters.push(waiter);
    }
}
