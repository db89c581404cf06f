//! The proxy-wasm side of the glue: [`ProxyWasmHost`] implements [`Host`] with hostcalls, and the two
//! adapters turn the SDK's callbacks into calls on [`Root`] and [`Stream`]. Only this file (and the
//! `main!` in lib.rs) needs a Wasm host; everything else in `filter` runs under `cargo test` too.

use super::host::{Buffer, CalloutRequest, Headers, Host, Map};
use super::root::{Root, TICK};
use super::stream::Stream;
use crate::http_reply::LocalReply;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

pub struct ProxyWasmHost;

// The hostcalls made without the SDK's wrappers (see their uses). Status 0 is Ok.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
}

/// A header map in the proxy-wasm ABI's form: the count, each name's and value's length (u32, little
/// endian), then each name and value followed by a NUL.
fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + map.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>());
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

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

    fn headers(&self, map: Map) -> Headers {
        // Not the SDK's get_map (or get_map_bytes): both unwrap a UTF-8 conversion, and a client's
        // header byte 0xff would trap the VM (see `Headers`).
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        let status = unsafe { proxy_get_header_map_pairs(map_type(map) as u32, &mut data, &mut size) };
        if status != 0 {
            return Headers { unreadable: true, ..Headers::default() };
        }
        if data.is_null() {
            return Headers::default();
        }
        // The host wrote the map into memory it obtained from this module's allocator (the SDK's
        // proxy_on_memory_allocate): ours to free, as the SDK's own readers do.
        let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
        Headers::parse(&bytes).unwrap_or(Headers { unreadable: true, ..Headers::default() })
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        let bytes = hostcalls::get_map_value_bytes(map_type(map), name).ok().flatten()?;
        String::from_utf8(bytes).ok()
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

    fn send_reply(&self, reply: &LocalReply, details: &str) -> bool {
        let headers = serialize_map(&reply.headers);
        let body = reply.body.as_bytes();
        // The SDK's send_http_response passes no details and panics on a status it does not expect;
        // the import itself does neither.
        let status = unsafe {
            proxy_send_local_response(
                reply.status,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        status == 0
    }

    fn set_property(&self, path: &str, value: &[u8]) {
        // A one-segment path (dots included): the SDK would join several with NUL, which no access-log
        // format can name. Not the SDK's set_property, which panics on a status it does not expect.
        let _ = unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
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
