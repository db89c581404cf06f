//! The glue to Envoy: executes what the host-tested modules decide. Every hostcall goes through the
//! [`host::Host`] trait, implemented with proxy-wasm in `proxy.rs` (Wasm only) and by a fake in the
//! tests, so the glue's state machines run under `cargo test` as well.
//!
//! Who does what:
//! - `proxy.rs`: the SDK's contexts, handing each callback to `root.rs` or `stream.rs`;
//! - `root.rs`: configuration, the tick, callouts made from the root; it only delegates;
//! - `stream.rs`: one request's callbacks, handed to `request.rs` (head, authentication, body decision)
//!   and `response.rs` (session learning, list trimming);
//! - `keys.rs`: the JWKS lifecycle in shared data; `exchange.rs`: obtaining upstream credentials;
//!   `introspect.rs`: introspecting opaque tokens (through the exchange's single-flight);
//!   `sessions.rs`: session bindings in shared data; `pins.rs`: tool-definition pins in shared data;
//! - `parked.rs` + `drain.rs`: the requests paused until keys, a body, an exchange or an introspection
//!   answer arrive, and the one place that acts when their wait is over;
//! - `answer.rs`: send / deny / finish, and the decision exported as filter state; `state.rs`: what is kept per request (its `Phase`);
//!   `worker.rs`: per-VM state; `metrics.rs`: counters.

mod answer;
mod drain;
mod exchange;
pub mod host;
mod introspect;
mod keys;
mod link;
pub mod metrics;
mod param_headers;
mod parked;
mod pins;
#[cfg(target_arch = "wasm32")]
pub mod proxy;
mod request;
mod response;
pub mod root;
mod sessions;
mod state;
pub mod stream;
mod worker;

#[cfg(test)]
mod tests;
