//! What the glue keeps about one request while Envoy streams it: where it is in its life ([`Phase`]),
//! who is calling, its body, the credential being obtained, and how its response is read.

use crate::exchange::cache::Key;
use crate::jwt::Principal;
use crate::mcp::list_scan::ListScan;
use crate::mcp::lists::{ListKind, SseRewriter};
use crate::mcp::mirror::MirrorHeaders;
use serde_json::Value;
use std::rc::Rc;

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Headers read: authenticating (perhaps held for keys) and, for an MCP POST, reading the body.
    #[default]
    Deciding,
    /// Authorized; its upstream credential is being obtained.
    ObtainingCredential,
    /// Let through to the upstream.
    Forwarded,
    /// Answered by the filter (refused, or served locally).
    Answered,
    /// Not the filter's to decide (an unguarded path, a CORS preflight): it passes untouched.
    Passed,
}

impl Phase {
    /// Nothing is pending any more: body frames and trailers pass as they come.
    pub fn settled(self) -> bool {
        !matches!(self, Phase::Deciding | Phase::ObtainingCredential)
    }
}

/// The request body, as far as the decision is concerned.
#[derive(Debug, Default)]
pub enum RequestBody {
    /// Not read: the request is not an MCP POST.
    #[default]
    Ignored,
    /// An MCP POST whose body has not fully arrived.
    Awaited,
    /// The whole body, arrived before authentication finished.
    Complete(Vec<u8>),
    /// Handed to the decision.
    Taken,
}

impl RequestBody {
    pub fn inspected(&self) -> bool {
        !matches!(self, RequestBody::Ignored)
    }

    pub fn complete(&self) -> bool {
        matches!(self, RequestBody::Complete(_) | RequestBody::Taken)
    }
}

#[derive(Default)]
pub struct StreamState {
    pub context_id: u32,
    pub phase: Phase,
    pub token: Option<Rc<str>>,
    /// HTTP method and path (canonical, without query), cut for logs.
    pub method: String,
    pub path: String,
    /// Set when the request first waits for keys; waiting never extends it.
    pub keys_deadline_ms: Option<u64>,
    pub principal: Option<Rc<Principal>>,
    pub body: RequestBody,
    pub mirror: MirrorHeaders,
    /// List requests whose responses are trimmed for this caller.
    pub lists: Vec<(Value, ListKind)>,
    /// The request is on an MCP endpoint: its response is read for lists, whatever it answers.
    pub mcp_path: bool,
    /// That endpoint's canonical path, whole (`path` is cut): learned tool records are kept per endpoint.
    pub endpoint: Rc<str>,
    /// A GET on an MCP path: the server's event stream. Resumed with `Last-Event-ID` (or polled, when a
    /// server closes POST streams early), it replays answers to earlier requests, lists among them.
    pub event_stream: bool,
    /// The `Mcp-Session-Id` the request names (when sessions are bound to callers).
    pub session_id: Option<String>,
    /// The introspection of this request's (opaque) token, while it is under way.
    pub introspection: Option<IntrospectionWait>,
    /// The upstream credential being obtained for this request.
    pub credential: Option<CredentialWait>,
    /// An `initialize` whose client declares URL elicitation (`filter::link`).
    pub declares_url_elicitation: bool,
    pub response: ResponseMode,
    /// What was decided, for `decision_export`.
    pub decided: crate::export::Record,
}

/// A request waiting for its upstream credential.
pub struct CredentialWait {
    pub target: usize,
    /// The targets obtained in turn (`Plan::chain`), and the one whose callout is in flight.
    pub chain: Vec<usize>,
    pub stage: usize,
    pub key: Key,
    /// What the client can be asked to do if its account is not linked (`connector.link`).
    pub era: crate::exchange::link::ClientEra,
    /// JSON-RPC id for error answers.
    pub id: Value,
    /// The body to rewrite once the token is known (connector, `inject_meta_key`).
    pub body: Option<Vec<u8>>,
    /// The callout this stream leads, if it leads one.
    pub callout: Option<u32>,
    /// The process-wide key (`exchange::shared`) this stream leases or waits for.
    pub shared: Option<Key>,
    /// This stream holds the lease on `shared` (so it frees it if its exchange fails).
    pub leased: bool,
    /// Waiting for another worker's callout (polled from the root's tick).
    pub waits_remote: bool,
    /// When the current step's callout started.
    pub started_ms: u64,
}

/// A request whose token is being introspected: by its own callout, another request's on this worker
/// (a follower), or another worker's.
pub struct IntrospectionWait {
    pub provider: usize,
    /// SHA-256 of the token and endpoint (`introspection::cache_key`), locally and process-wide.
    pub key: Key,
    /// The callout this stream leads, if it leads one.
    pub callout: Option<u32>,
    /// This stream holds the process-wide lease on `key`.
    pub leased: bool,
    /// Waiting for another worker's callout.
    pub waits_remote: bool,
    /// Set when the request first waits; waiting again (its leader went away) never extends it.
    pub deadline_ms: u64,
}

#[derive(Default)]
pub enum ResponseMode {
    #[default]
    Untouched,
    /// `application/json` list response: buffered whole, then trimmed.
    Json,
    /// Any other `application/json` response: scanned for a list result (`list_scan`) while held, up to
    /// `response::MAX_HELD_RESPONSE_BYTES`, and trimmed whole if one is found. A longer response goes
    /// out as it comes, and is cut where a list would begin.
    JsonScan {
        scan: ListScan,
        /// Still held (Envoy buffers it): nothing has gone out yet.
        holding: bool,
        /// The response's `Content-Length`, left in place: what replaces its body keeps that length.
        fixed_length: Option<usize>,
    },
    /// `text/event-stream`: rewritten event by event.
    Sse(SseRewriter),
    /// The response cannot be filtered (compressed): replaced by a JSON-RPC error.
    Replace,
    /// The replacement was sent; what follows is dropped, or blanked with spaces when the response
    /// keeps its `Content-Length` (so the client is not left waiting for bytes that never come).
    Blank { keep_length: bool },
}
