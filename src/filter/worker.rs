//! State of one worker VM, shared by its root context and its streams: configuration, the host, keys,
//! caches, counters, and the requests parked until something happens elsewhere.

use super::host::Host;
use super::keys::KeySources;
use super::metrics::Metrics;
use super::parked::ParkedRequests;
use super::state::StreamState;
use crate::config::Config;
use crate::exchange::cache::ExchangeCache;
use crate::exchange::shared::Slots;
use crate::jwt::Authenticator;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// The stream (context id and state) that leads an exchange callout.
pub type CalloutOwner = (u32, Weak<RefCell<StreamState>>);

pub struct Worker {
    pub config: Rc<Config>,
    pub host: Rc<dyn Host>,
    pub authn: RefCell<Authenticator>,
    pub metrics: Metrics,
    pub keys: KeySources,
    pub parked: ParkedRequests,
    /// Exchanged upstream tokens, and the callouts in flight for them.
    pub exchange_cache: RefCell<ExchangeCache>,
    /// Exchange callouts in flight: token id → the stream that leads it.
    pub exchange_callouts: RefCell<HashMap<u32, CalloutOwner>>,
    /// Process-wide exchange slots (`exchange::shared`); 0 when the exchange cache is off.
    pub exchange_slots: Slots,
    /// Introspection answers (`introspection::encode`) by token hash, and the callouts in flight.
    pub introspection_cache: RefCell<ExchangeCache>,
    /// Introspection callouts in flight: token id → the stream that leads it.
    pub introspection_callouts: RefCell<HashMap<u32, CalloutOwner>>,
    /// Process-wide slots active introspection answers spread over (apart from the exchange's).
    pub introspection_slots: Slots,
}

impl Worker {
    pub fn new(config: Rc<Config>, host: Rc<dyn Host>) -> Worker {
        let exchange_cache =
            ExchangeCache::new(config.credentials.cache_max_entries, config.credentials.cache_margin_seconds);
        let exchange_slots = Slots::exchange(config.credentials.cache_max_entries);
        let introspection_entries =
            config.providers.iter().find_map(|p| p.introspection.as_ref()).map_or(0, |s| s.cache_max_entries);
        // Reuse is timed by each answer's own expiry: no margin.
        let introspection_cache = ExchangeCache::new(introspection_entries, 0);
        Worker {
            authn: RefCell::new(Authenticator::new(config.clone())),
            metrics: Metrics::define(&host, &config.mcp.policy),
            keys: KeySources::new(&config),
            parked: ParkedRequests::default(),
            exchange_cache: RefCell::new(exchange_cache),
            exchange_callouts: RefCell::new(HashMap::new()),
            exchange_slots,
            introspection_cache: RefCell::new(introspection_cache),
            introspection_callouts: RefCell::new(HashMap::new()),
            introspection_slots: Slots::introspection(introspection_entries),
            config,
            host,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.host.now_ms()
    }
}
