//! What the glue asks of Envoy, as a trait: headers, bodies, callouts, shared data, time, local replies,
//! the effective context, counters. `proxy.rs` implements it with proxy-wasm hostcalls; the tests in
//! `tests.rs` implement it with a fake, so that `cargo test` drives the glue's state machines (requests
//! held for keys, followers of an exchange, streams gone mid-callout, body timeouts) on the host.
//!
//! Every call acts on the *effective* context, as hostcalls do: the stream whose callback is running,
//! or the one [`Host::enter`] made current (a request finished from the root's tick or a callout answer).

use crate::http_reply::LocalReply;
use proxy_wasm::types::Status;

/// A header map of the effective context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    RequestHeaders,
    ResponseHeaders,
    /// The headers of the callout answer being delivered.
    CalloutResponseHeaders,
}

/// A body buffer of the effective context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    RequestBody,
    ResponseBody,
    /// The body of the callout answer being delivered.
    CalloutResponseBody,
}

/// An HTTP callout: the cluster, `:method`/`:path`/`:authority` and the other headers, the body.
pub struct CalloutRequest<'a> {
    pub cluster: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u64,
}

impl<'a> CalloutRequest<'a> {
    pub fn of(callout: &'a crate::exchange::Callout) -> Self {
        CalloutRequest {
            cluster: &callout.cluster,
            headers: callout.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
            body: Some(&callout.body),
            timeout_ms: callout.timeout_ms,
        }
    }
}

pub trait Host {
    /// Wall-clock time in Unix milliseconds.
    fn now_ms(&self) -> u64;
    fn headers(&self, map: Map) -> Vec<(String, String)>;
    fn header(&self, map: Map, name: &str) -> Option<String>;
    /// `None` removes the header.
    fn set_header(&self, map: Map, name: &str, value: Option<&str>);
    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Vec<u8>;
    /// Replaces `size` bytes from `start` with `data`.
    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]);
    /// Starts a callout; its answer comes to the context that was effective, under the returned token.
    fn dispatch(&self, request: &CalloutRequest) -> Result<u32, Status>;
    /// A shared-data record (one store per Envoy process and `vm_id`) and its compare-and-swap value.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status>;
    /// Answers the effective stream locally; `details` is what Envoy's `%RESPONSE_CODE_DETAILS%` shows
    /// (no spaces). False if the host refused.
    fn send_reply(&self, reply: &LocalReply, details: &str) -> bool;
    /// Sets a property of the effective stream: Envoy keeps it as filter state `wasm.<path>`.
    fn set_property(&self, path: &str, value: &[u8]);
    /// Makes `context_id` the effective context; false if that stream is gone.
    fn enter(&self, context_id: u32) -> bool;
    /// Lets the effective stream's held request go on.
    fn resume_request(&self);
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn increment(&self, counter: u32);
}
