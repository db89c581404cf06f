//! The JWKS glue: each remote key set's shared-data records (decided by `crate::jwks`), the fetch a tick
//! starts when one is due (one per Envoy process: the worker whose compare-and-swap takes the lease),
//! its answer, and loading a key set another VM stored into this worker's authenticator.

use super::host::{Buffer, CalloutRequest, Host, Map};
use super::metrics::Metrics;
use crate::config::Config;
use crate::jwks::{self, Refetch, SharedState};
use crate::jwt::Authenticator;
use crate::jwt::jwk::KeySet;
use crate::jwt::provider::{JwksSource, RemoteJwks};
use log::{info, warn};
use proxy_wasm::types::Status;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Bounded retries for a compare-and-swap that loses to other workers.
const CAS_ATTEMPTS: usize = 8;

/// The cas for a compare-and-swap write of a shared-data record read with `cas` (None: the record did
/// not exist). Writing an absent record without a cas would let two workers that both read "absent"
/// both win. Envoy creates an absent key whatever the cas, but refuses to overwrite an existing one
/// unless the cas matches (proxy-wasm-cpp-host `SharedData::set`); its cas values count up from 1 across
/// all shared data of the process, so `u32::MAX` makes the write "create if absent": the loser reads the
/// winner's record on its next turn. An existing record holds that cas only after ~4 billion writes,
/// and then only by chance.
pub fn compare_and_swap_cas(cas: Option<u32>) -> Option<u32> {
    Some(cas.unwrap_or(u32::MAX))
}

/// Counts one more record under the counter `key`, unless `max` are already counted: the bound on
/// records learned from upstream answers, shared by every worker. False when full (or on a write error).
pub fn count_one_more(host: &dyn Host, key: &str, max: usize) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = host.shared_get(key);
        let count: usize = bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
        if count >= max {
            return false;
        }
        match host.shared_set(key, (count + 1).to_string().as_bytes(), compare_and_swap_cas(cas)) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// One provider's remote key set, as this worker sees it.
pub struct RemoteSlot {
    pub cfg: RemoteJwks,
    pub provider_name: String,
    state_key: String,
    keys_key: String,
    /// What this worker last saw of the shared record.
    seen_generation: Cell<u64>,
    seen_completed: Cell<u64>,
}

/// Every provider's remote key set (None for inline sets), and the fetches in flight from this VM.
pub struct KeySources {
    slots: Vec<Option<RemoteSlot>>,
    /// JWKS callouts in flight: token id → provider index.
    callouts: RefCell<HashMap<u32, usize>>,
}

/// What the fetch answer did, for the caller to act on.
pub enum Fetched {
    /// Not a JWKS callout of this VM.
    NotOurs,
    Done,
}

impl KeySources {
    pub fn new(config: &Config) -> KeySources {
        let slots = config
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
        KeySources { slots, callouts: RefCell::new(HashMap::new()) }
    }

    pub fn slot(&self, provider: usize) -> Option<&RemoteSlot> {
        self.slots.get(provider).and_then(Option::as_ref)
    }

    fn remote(&self) -> impl Iterator<Item = (usize, &RemoteSlot)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn read_state(&self, host: &dyn Host, slot: &RemoteSlot) -> (SharedState, Option<u32>) {
        let (bytes, cas) = host.shared_get(&slot.state_key);
        (SharedState::decode(bytes.as_deref()), cas)
    }

    /// Compare-and-swap the shared record with `change`; `change` returning None means "leave it".
    fn update_state(
        &self,
        host: &dyn Host,
        slot: &RemoteSlot,
        change: impl Fn(&SharedState) -> Option<SharedState>,
    ) -> Option<SharedState> {
        for _ in 0..CAS_ATTEMPTS {
            let (current, cas) = self.read_state(host, slot);
            let next = change(&current)?;
            match host.shared_set(&slot.state_key, &next.encode(), compare_and_swap_cas(cas)) {
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

    /// Creates the shared records no VM has created yet (first configure on the main thread).
    pub fn ensure_states(&self, host: &dyn Host) {
        for (_, slot) in self.remote() {
            if let (None, cas) = host.shared_get(&slot.state_key) {
                // Create only: another VM may have created it (and a worker leased a fetch) since the read.
                let _ = host.shared_set(&slot.state_key, &SharedState::default().encode(), compare_and_swap_cas(cas));
            }
        }
    }

    /// From the tick: starts every fetch that is due and that this VM wins the lease for.
    pub fn start_due_fetches(&self, host: &dyn Host, metrics: &Metrics, now: u64) {
        for (provider, slot) in self.remote() {
            let (state, _) = self.read_state(host, slot);
            if !state.fetch_due(now) {
                continue;
            }
            if self.update_state(host, slot, |s| s.fetch_due(now).then(|| s.with_lease(now, &slot.cfg))).is_none() {
                continue; // another VM took the fetch
            }
            let request = CalloutRequest {
                cluster: &slot.cfg.cluster,
                headers: vec![
                    (":method", "GET"),
                    (":path", slot.cfg.path.as_str()),
                    (":authority", slot.cfg.authority.as_str()),
                    ("accept", "application/json"),
                    ("user-agent", "mcp-authz"),
                ],
                body: None,
                timeout_ms: slot.cfg.timeout_ms,
            };
            match host.dispatch(&request) {
                Ok(token) => {
                    self.callouts.borrow_mut().insert(token, provider);
                }
                Err(status) => {
                    // Typically an unknown cluster name, or `envoy --mode validate`, where callouts are refused.
                    self.update_state(host, slot, |s| Some(s.after_failure(now, &slot.cfg)));
                    metrics.jwks_fetch_failed.inc();
                    warn!(
                        "provider {}: JWKS callout to cluster {:?} refused ({status:?}); is the cluster defined?",
                        slot.provider_name, slot.cfg.cluster
                    );
                }
            }
        }
    }

    /// A callout answered: if it is one of this VM's JWKS fetches, stores the key set (or records the
    /// failure) for every VM.
    pub fn on_response(
        &self,
        host: &dyn Host,
        authn: &RefCell<Authenticator>,
        metrics: &Metrics,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
    ) -> Fetched {
        let Some(provider) = self.callouts.borrow_mut().remove(&token_id) else { return Fetched::NotOurs };
        let Some(slot) = self.slot(provider) else { return Fetched::Done };
        let now = host.now_ms();
        let status = if num_headers == 0 { None } else { host.header(Map::CalloutResponseHeaders, ":status") };
        let result = jwks::check_head(status.as_deref(), body_size, &slot.cfg).and_then(|()| {
            let body = host.buffer(Buffer::CalloutResponseBody, 0, body_size);
            jwks::parse_body(&body).map(|set| (set, body))
        });
        match result {
            Ok((set, body)) if let Some(changed) = self.store_keys(host, slot, &body) => {
                let max_age = host.header(Map::CalloutResponseHeaders, "cache-control").and_then(|v| jwks::max_age(&v));
                self.update_state(host, slot, |s| Some(s.after_success(now, max_age, changed, &slot.cfg)));
                metrics.jwks_fetch_success.inc();
                if !set.skipped.is_empty() {
                    info!("provider {}: JWKS keys skipped: {}", slot.provider_name, set.skipped.join("; "));
                }
            }
            outcome => {
                let reason = match outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => "could not store the key set in shared data".to_string(),
                };
                let next = self.update_state(host, slot, |s| Some(s.after_failure(now, &slot.cfg)));
                metrics.jwks_fetch_failed.inc();
                let keeping =
                    if authn.borrow().has_keys(provider) { "keeping the previous keys" } else { "no keys yet" };
                let retry = next.map_or(0, |s| s.next_fetch_ms.saturating_sub(now));
                warn!(
                    "provider {}: JWKS fetch from cluster {} failed: {reason}; {keeping}; retry in {retry} ms",
                    slot.provider_name, slot.cfg.cluster
                );
            }
        }
        Fetched::Done
    }

    /// Stores a fetched key set. `Some(changed)` once stored: a refresh that returns the very same
    /// document must not make every worker reload its keys and flush its token cache (a client could
    /// otherwise flush them at will, once per unknown-`kid` refetch interval). `None`: not stored.
    fn store_keys(&self, host: &dyn Host, slot: &RemoteSlot, body: &[u8]) -> Option<bool> {
        if let (Some(stored), _) = host.shared_get(&slot.keys_key)
            && stored == body
        {
            return Some(false);
        }
        host.shared_set(&slot.keys_key, body, None).is_ok().then_some(true)
    }

    /// Loads the key sets other VMs (or this one) stored since this worker last looked.
    pub fn sync_all(&self, host: &dyn Host, authn: &RefCell<Authenticator>) {
        for (provider, slot) in self.remote() {
            let (state, _) = self.read_state(host, slot);
            self.sync(host, authn, provider, slot, &state);
        }
    }

    fn sync(
        &self,
        host: &dyn Host,
        authn: &RefCell<Authenticator>,
        provider: usize,
        slot: &RemoteSlot,
        state: &SharedState,
    ) {
        slot.seen_completed.set(state.completed);
        if state.generation == slot.seen_generation.get() {
            return;
        }
        let (Some(bytes), _) = host.shared_get(&slot.keys_key) else { return };
        match KeySet::parse(&bytes) {
            Ok(set) => {
                info!(
                    "provider {} now uses {} signing key(s) (generation {})",
                    slot.provider_name,
                    set.keys.len(),
                    state.generation
                );
                authn.borrow_mut().set_keys(provider, Rc::new(set));
                slot.seen_generation.set(state.generation);
            }
            // Only validated sets are stored, so this means a foreign writer; keep what we have.
            Err(e) => warn!("provider {}: shared key set unreadable: {e}", slot.provider_name),
        }
    }

    /// Loads the shared key set at once if another VM stored a newer one than this worker has (it would
    /// otherwise do so on its next tick). True when this worker's keys changed.
    pub fn sync_now(&self, host: &dyn Host, authn: &RefCell<Authenticator>, provider: usize) -> bool {
        let Some(slot) = self.slot(provider) else { return false };
        let before = slot.seen_generation.get();
        let (state, _) = self.read_state(host, slot);
        self.sync(host, authn, provider, slot, &state);
        slot.seen_generation.get() != before
    }

    /// Asks for an early fetch because a token named a key we do not have.
    pub fn request_refetch(&self, host: &dyn Host, metrics: &Metrics, provider: usize, now_ms: u64) -> Refetch {
        let Some(slot) = self.slot(provider) else { return Refetch::RateLimited };
        let (state, _) = self.read_state(host, slot);
        match state.refetch(now_ms, &slot.cfg) {
            Refetch::Scheduled(_) => {
                let scheduled = self.update_state(host, slot, |s| match s.refetch(now_ms, &slot.cfg) {
                    Refetch::Scheduled(next) => Some(next),
                    _ => None,
                });
                match scheduled {
                    Some(_) => {
                        metrics.jwks_refetch_unknown_kid.inc();
                        Refetch::Scheduled(state)
                    }
                    // Another worker changed the record first: it is fetching, or just did.
                    None => match self.read_state(host, slot).0.refetch(now_ms, &slot.cfg) {
                        Refetch::InFlight => Refetch::InFlight,
                        _ => Refetch::RateLimited,
                    },
                }
            }
            other => other,
        }
    }

    /// Fetches of this provider's key set that have finished, as last seen by this worker.
    pub fn completed_fetches(&self, provider: usize) -> u64 {
        self.slot(provider).map_or(0, |s| s.seen_completed.get())
    }
}
