//! The root context of one VM: loads configuration, runs the JWKS lifecycle on a tick, receives the
//! callouts made from it, and drains the parked requests. It only delegates.

use super::drain::drain;
use super::exchange;
use super::host::Host;
use super::introspect;
use super::keys::Fetched;
use super::request;
use super::stream::Stream;
use super::worker::Worker;
use crate::config;
use log::error;
use std::rc::Rc;
use std::time::Duration;

/// How often each VM looks at the shared JWKS record, starts due fetches and expires held requests.
/// Reading the record is one small shared-data copy, so a short period costs little and bounds how long
/// a held request waits after another worker loaded the keys.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Root {
    worker: Option<Rc<Worker>>,
}

impl Root {
    /// Takes a new configuration; false refuses it (Envoy then logs the plugin as failed to load).
    pub fn configure(&mut self, bytes: &[u8], host: Rc<dyn Host>) -> bool {
        let config = match config::parse(bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                error!("configuration refused: {e}");
                return false;
            }
        };
        let worker = Rc::new(Worker::new(config, host));
        worker.keys.ensure_states(worker.host.as_ref());
        self.worker = Some(worker);
        true
    }

    pub fn tick(&self) {
        let Some(worker) = &self.worker else { return };
        let now = worker.now_ms();
        worker.keys.start_due_fetches(worker.host.as_ref(), &worker.metrics, now);
        self.sync_and_drain(worker, now);
    }

    /// A callout made from the root context answered: an exchange made while finishing a request that
    /// had waited (for keys, or for another worker's exchange), or a JWKS fetch.
    pub fn on_callout(&self, token_id: u32, num_headers: usize, body_size: usize) {
        let Some(worker) = &self.worker else { return };
        if exchange::on_callout(worker, token_id, num_headers, body_size) {
            return;
        }
        if let Some(verified) = introspect::on_callout(worker, token_id, num_headers, body_size) {
            request::resume_verified(worker, verified);
            return;
        }
        let host = worker.host.as_ref();
        match worker.keys.on_response(host, &worker.authn, &worker.metrics, token_id, num_headers, body_size) {
            Fetched::NotOurs => {}
            Fetched::Done => self.sync_and_drain(worker, worker.now_ms()),
        }
    }

    pub fn new_stream(&self, context_id: u32) -> Option<Stream> {
        Some(Stream::new(context_id, self.worker.clone()?))
    }

    /// How many requests are parked (waiting for keys, a body, an exchange).
    #[cfg(test)]
    pub fn parked_requests(&self) -> usize {
        self.worker.as_ref().map_or(0, |w| w.parked.len())
    }

    /// Loads keys other VMs stored, then acts on parked requests whose wait is over.
    fn sync_and_drain(&self, worker: &Rc<Worker>, now: u64) {
        worker.keys.sync_all(worker.host.as_ref(), &worker.authn);
        drain(worker, now);
    }
}
