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

/// A header map as read from Envoy. HTTP allows any byte from 0x80 up in a field value (obs-text) and
/// Envoy passes them on; the SDK's readers panic on such a value (a trap that leaves the VM unusable), so
/// the map is read as bytes: values that are UTF-8 land in `pairs`, the names of the others in
/// `undecodable` (never looked at, but known, so that the request path can refuse or strip them).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Headers {
    pub pairs: Vec<(String, String)>,
    pub undecodable: Vec<String>,
    /// The host's map could not be read at all (a failed hostcall, a malformed map): nothing is known of
    /// it, so the request path refuses rather than decide on an empty map.
    pub unreadable: bool,
}

impl Headers {
    /// Parses a map in the proxy-wasm ABI's form (see `proxy::serialize_map`); None if it is malformed.
    pub fn parse(bytes: &[u8]) -> Option<Headers> {
        let mut headers = Headers::default();
        if bytes.is_empty() {
            return Some(headers);
        }
        let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize);
        let count = word(0)?;
        let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
        for n in 0..count {
            let (name_len, value_len) = (word(4 + n * 8)?, word(8 + n * 8)?);
            let name = bytes.get(at..at.checked_add(name_len)?)?;
            at += name_len + 1;
            let value = bytes.get(at..at.checked_add(value_len)?)?;
            at += value_len + 1;
            let name = String::from_utf8_lossy(name).into_owned();
            match std::str::from_utf8(value) {
                Ok(value) => headers.pairs.push((name, value.to_string())),
                Err(_) => headers.undecodable.push(name),
            }
        }
        Some(headers)
    }
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
    fn headers(&self, map: Map) -> Headers;
    /// One header's value; None when absent or not UTF-8.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn values_that_are_not_utf8_are_named_not_decoded() {
        let bytes = serialized(&[(b":path", b"/mcp"), (b"mcp-name", b"caf\xe9\xff"), (b"x-ok", "é".as_bytes())]);
        let headers = Headers::parse(&bytes).unwrap();
        assert_eq!(headers.pairs, vec![(":path".into(), "/mcp".into()), ("x-ok".into(), "é".into())]);
        assert_eq!(headers.undecodable, vec!["mcp-name".to_string()]);
    }

    #[test]
    fn malformed_maps_are_refused_not_trusted() {
        assert_eq!(Headers::parse(&[]), Some(Headers::default()));
        let bytes = serialized(&[(b"a", b"b")]);
        for cut in 1..bytes.len() - 1 {
            assert_eq!(Headers::parse(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Headers::parse(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
