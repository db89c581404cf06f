//! The root context of one VM: loads configuration, runs the JWKS lifecycle on a tick, makes the JWKS
//! callouts, and finishes requests that were held for keys.

use super::now_ms;
use super::stream::{self, Stream};
use super::worker::{Waiter, Worker};
use crate::authn;
use crate::config;
use crate::jwks;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// How often each VM looks at the shared JWKS record, starts due fetches and expires held requests.
/// Reading the record is one small shared-data copy, so a short period costs little and bounds how long
/// a held request waits after another worker loaded the keys.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Root {
    worker: Option<Rc<Worker>>,
    /// JWKS callouts in flight: token id → provider index.
    pending: HashMap<u32, usize>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(worker) = self.worker.clone() else { return };
        if super::credentials::on_callout(&worker, token_id, num_headers, body_size) {
            return; // an exchange made while finishing a request that had waited for keys
        }
        let Some(provider) = self.pending.remove(&token_id) else { return };
        let Some(slot) = worker.slot(provider) else { return };
        let now = now_ms();
        let status = if num_headers == 0 { None } else { self.get_http_call_response_header(":status") };
        let result = jwks::check_head(status.as_deref(), body_size, &slot.cfg).and_then(|()| {
            let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
            jwks::parse_body(&body).map(|set| (set, body))
        });
        match result {
            Ok((set, body)) if let Some(changed) = worker.store_keys(slot, &body) => {
                let max_age = self.get_http_call_response_header("cache-control").and_then(|v| jwks::max_age(&v));
                worker.update_state(slot, |s| Some(s.after_success(now, max_age, changed, &slot.cfg)));
                worker.metrics.jwks_fetch_success.inc();
                if !set.skipped.is_empty() {
                    info!("provider {}: JWKS keys skipped: {}", slot.provider_name, set.skipped.join("; "));
                }
            }
            outcome => {
                let reason = match outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => "could not store the key set in shared data".to_string(),
                };
                let next = worker.update_state(slot, |s| Some(s.after_failure(now, &slot.cfg)));
                worker.metrics.jwks_fetch_failed.inc();
                let keeping =
                    if worker.authn.borrow().has_keys(provider) { "keeping the previous keys" } else { "no keys yet" };
                let retry = next.map_or(0, |s| s.next_fetch_ms.saturating_sub(now));
                warn!(
                    "provider {}: JWKS fetch from cluster {} failed: {reason}; {keeping}; retry in {retry} ms",
                    slot.provider_name, slot.cfg.cluster
                );
            }
        }
        self.sync_and_release(&worker, now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match config::parse(&bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                error!("configuration refused: {e}");
                return false;
            }
        };
        let worker = Rc::new(Worker::new(config));
        for slot in worker.remotes.iter().flatten() {
            worker.ensure_state(slot);
        }
        self.worker = Some(worker);
        self.pending.clear();
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else { return };
        let now = now_ms();
        for (provider, slot) in worker.remotes.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let (state, _) = worker.read_state(slot);
            if !state.fetch_due(now) {
                continue;
            }
            if worker.update_state(slot, |s| s.fetch_due(now).then(|| s.with_lease(now, &slot.cfg))).is_none() {
                continue; // another VM took the fetch
            }
            let headers = vec![
                (":method", "GET"),
                (":path", slot.cfg.path.as_str()),
                (":authority", slot.cfg.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "mcp-authz"),
            ];
            match self.dispatch_http_call(
                &slot.cfg.cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(slot.cfg.timeout_ms),
            ) {
                Ok(token) => {
                    self.pending.insert(token, provider);
                }
                Err(status) => {
                    // Typically an unknown cluster name, or `envoy --mode validate`, where callouts are refused.
                    worker.update_state(slot, |s| Some(s.after_failure(now, &slot.cfg)));
                    worker.metrics.jwks_fetch_failed.inc();
                    warn!(
                        "provider {}: JWKS callout to cluster {:?} refused ({status:?}); is the cluster defined?",
                        slot.provider_name, slot.cfg.cluster
                    );
                }
            }
        }
        self.sync_and_release(&worker, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Stream::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Loads keys other VMs stored, then finishes held requests whose wait is over.
    fn sync_and_release(&self, worker: &Rc<Worker>, now: u64) {
        for (provider, slot) in worker.remotes.iter().enumerate() {
            if let Some(slot) = slot {
                let (state, _) = worker.read_state(slot);
                worker.sync_keys(provider, slot, &state);
            }
        }
        // Take the list out: finishing a request makes hostcalls that may re-enter this VM.
        let waiters = std::mem::take(&mut *worker.waiters.borrow_mut());
        let mut still_waiting: Vec<Waiter> = Vec::new();
        for waiter in waiters {
            let Some(state) = waiter.stream.upgrade() else { continue };
            let fetch_finished = worker.completed_fetches(waiter.provider) > waiter.completed_at_start;
            let timed_out = now >= waiter.deadline_ms;
            if !fetch_finished && !timed_out {
                still_waiting.push(waiter);
                continue;
            }
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue; // the stream is gone
            }
            let token = state.borrow().token.clone();
            match token {
                Some(token) if !timed_out => {
                    stream::authenticate(worker, waiter.context_id, &state, &token, true);
                }
                _ => {
                    let have_keys = worker.authn.borrow().has_keys(waiter.provider);
                    let denial = authn::give_up(&worker.config, waiter.unknown_key, have_keys);
                    stream::deny(worker, &state, &denial, token.as_deref());
                }
            }
        }
        worker.waiters.borrow_mut().extend(still_waiting);
        self.expire_body_waits(worker, now);
        super::credentials::expire_followers(worker, now);
        super::credentials::poll_remote_waits(worker, now);
    }

    /// Answers 408 for MCP POSTs whose body did not arrive in time. If every POST ends like this, Envoy
    /// is not delivering bodies to the filter while it holds the headers: the Wasm `PluginConfig` lacks
    /// `allow_on_headers_stop_iteration: true`. Never lets such a request through uninspected.
    fn expire_body_waits(&self, worker: &Rc<Worker>, now: u64) {
        let waits = std::mem::take(&mut *worker.body_waits.borrow_mut());
        let mut kept = Vec::with_capacity(waits.len());
        for wait in waits {
            let Some(state) = wait.stream.upgrade() else { continue };
            if state.borrow().settled || state.borrow().body_complete {
                continue;
            }
            if now < wait.deadline_ms {
                kept.push(wait);
                continue;
            }
            if hostcalls::set_effective_context(wait.context_id).is_err() {
                continue;
            }
            warn!(
                "no complete request body within mcp.body_timeout_ms; answering 408. If every MCP POST fails \
                 like this, set allow_on_headers_stop_iteration: true in the Wasm filter's config"
            );
            let reply = crate::mcp::jsonrpc_reply::request_error(408, "Request body not received in time");
            stream::deny(worker, &state, &authn::Denial { reason: "body_timeout", reply }, None);
        }
        worker.body_waits.borrow_mut().extend(kept);
    }
}
