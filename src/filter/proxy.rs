//! The proxy-wasm side of the glue: [`ProxyWasmHost`] implements [`Host`] with hostcalls, and the two
//! adapters turn the SDK's callbacks into calls on [`Root`] and [`Stream`]. Only this file (and the
//! `main!` in lib.rs) needs a Wasm host; everything else in `filter` runs under `cargo test` too.

use super::host::{Buffer, CalloutRequest, Host, Map};
use super::root::{Root, TICK};
use super::stream::Stream;
use crate::http_reply::LocalReply;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

pub struct ProxyWasmHost;

fn map_type(map: Map) -> MapType {
    match map {
        Map::RequestHeaders => MapType::HttpRequestHeaders,
        Map::ResponseHeaders => MapType::HttpResponseHeaders,
        Map::CalloutResponseHeaders => MapType::HttpCallResponseHeaders,
    }
}

fn buffer_type(buffer: Buffer) -> BufferType {
    match buffer {
        Buffer::RequestBody => BufferType::HttpRequestBody,
        Buffer::ResponseBody => BufferType::HttpResponseBody,
        Buffer::CalloutResponseBody => BufferType::HttpCallResponseBody,
    }
}

impl Host for ProxyWasmHost {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn headers(&self, map: Map) -> Vec<(String, String)> {
        hostcalls::get_map(map_type(map)).unwrap_or_default()
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        hostcalls::get_map_value(map_type(map), name).ok().flatten()
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(map_type(map), name, value);
    }

    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(buffer_type(buffer), start, size).ok().flatten().unwrap_or_default()
    }

    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]) {
        let _ = hostcalls::set_buffer(buffer_type(buffer), start, size, data);
    }

    fn dispatch(&self, request: &CalloutRequest) -> Result<u32, Status> {
        let timeout = Duration::from_millis(request.timeout_ms);
        hostcalls::dispatch_http_call(request.cluster, request.headers.clone(), request.body, vec![], timeout)
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        hostcalls::set_shared_data(key, Some(value), cas)
    }

    fn send_reply(&self, reply: &LocalReply) -> bool {
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())).is_ok()
    }

    fn enter(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn increment(&self, counter: u32) {
        let _ = hostcalls::increment_metric(counter, 1);
    }
}

/// The root context the SDK calls.
pub struct RootAdapter {
    root: Root,
    host: Rc<dyn Host>,
}

impl Default for RootAdapter {
    fn default() -> Self {
        RootAdapter { root: Root::default(), host: Rc::new(ProxyWasmHost) }
    }
}

impl Context for RootAdapter {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        self.root.on_callout(token_id, num_headers, body_size);
    }
}

impl RootContext for RootAdapter {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let configured = self.root.configure(&bytes, self.host.clone());
        if configured {
            self.set_tick_period(TICK);
        }
        configured
    }

    fn on_tick(&mut self) {
        self.root.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StreamAdapter(self.root.new_stream(context_id)?)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context the SDK calls.
struct StreamAdapter(Stream);

impl Context for StreamAdapter {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        self.0.on_callout(token_id, num_headers, body_size);
    }
}

impl HttpContext for StreamAdapter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.0.on_request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.0.on_request_trailers()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.0.on_response_headers()
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_response_body(body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.0.on_response_trailers()
    }
}
