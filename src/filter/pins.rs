//! Tool pins in shared data (decided in `mcp::pins`): what a `tools/list` shows is checked against the
//! pin, a change is recorded once for every worker (counted and logged by the worker that records it),
//! and calls to a changed tool are refused while the change lasts.

use super::host::Host;
use super::keys::{compare_and_swap_cas, count_one_more};
use super::metrics::Metrics;
use crate::clip::clip;
use crate::mcp::pins::{self, Pin, Record, ToolPins};
use log::{info, warn};
use proxy_wasm::types::Status;
use serde_json::Value;

/// Bounded retries for a compare-and-swap that loses to other workers.
const CAS_ATTEMPTS: usize = 4;

fn read(host: &dyn Host, key: &str) -> (Option<Record>, Option<u32>) {
    let (bytes, cas) = host.shared_get(key);
    (bytes.as_deref().and_then(Record::decode), cas)
}

/// The pin `name` must match: configured, or learned (then `record` holds it); None: not pinned.
fn pin_for(config: &ToolPins, name: &str, record: Option<&Record>) -> Option<Pin> {
    match config.configured(name) {
        Some(pin) => Some(*pin),
        None if config.learn => record.map(|r| r.pinned),
        None => None,
    }
}

/// A `tools/list` shows `tool` (named `name`): whether the caller may see it. Learns its pin on first
/// sight (within `max_tools`), and records a change (or its end) for every worker.
pub fn listed(host: &dyn Host, metrics: &Metrics, config: &ToolPins, name: &str, tool: &Value) -> bool {
    let shown = pins::pin_of(tool);
    let key = pins::record_key(name);
    for _ in 0..CAS_ATTEMPTS {
        let (record, cas) = read(host, &key);
        let pinned = match pin_for(config, name, record.as_ref()) {
            Some(pinned) => pinned,
            None if config.learn => {
                if !count_one_more(host, pins::LEARNED_COUNT_KEY, config.max_tools) {
                    warn!("tool {:?} not pinned: tool_pins.max_tools ({}) reached", clip(name), config.max_tools);
                    return true;
                }
                shown
            }
            None => return true,
        };
        let next = Record { pinned, seen: shown };
        if record.as_ref() == Some(&next) {
            return !next.changed(); // nothing new: every worker already knows
        }
        match host.shared_set(&key, &next.encode(), compare_and_swap_cas(cas)) {
            Ok(()) => {
                report(metrics, name, &next);
                return !next.changed();
            }
            Err(Status::CasMismatch) => continue, // another worker wrote first: read again
            Err(_) => return pinned == shown,
        }
    }
    pinned_matches(config, name, &shown, host, &key)
}

/// After losing every compare-and-swap: decide from what is stored now, without writing.
fn pinned_matches(config: &ToolPins, name: &str, shown: &Pin, host: &dyn Host, key: &str) -> bool {
    let (record, _) = read(host, key);
    pin_for(config, name, record.as_ref()).is_none_or(|pinned| pinned == *shown)
}

fn report(metrics: &Metrics, name: &str, record: &Record) {
    if record.changed() {
        metrics.tool_definition_changed.inc();
        warn!(
            "tool {:?} changed its definition (pinned sha256:{}, now sha256:{}): hidden from tools/list and its \
             calls refused until tool_pins is updated",
            clip(name),
            pins::hex(&record.pinned),
            pins::hex(&record.seen)
        );
    } else {
        info!("tool {:?} pinned at sha256:{}", clip(name), pins::hex(&record.pinned));
    }
}

/// Whether `tools/call` of `name` must be refused: the last `tools/list` showed it changed.
pub fn definition_changed(host: &dyn Host, config: &ToolPins, name: &str) -> bool {
    let (record, _) = read(host, &pins::record_key(name));
    let Some(record) = record else { return false };
    // A configured pin that differs from the recorded one was updated by the operator: the change it
    // recorded is not this pin's.
    pin_for(config, name, Some(&record)) == Some(record.pinned) && record.changed()
}
