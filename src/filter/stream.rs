//! One request as Envoy streams it: the per-request context's callbacks, each handed to the request or
//! response path with this stream's state.

use super::exchange;
use super::introspect;
use super::request;
use super::response;
use super::state::StreamState;
use super::worker::Worker;
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Stream {
    worker: Rc<Worker>,
    state: Rc<RefCell<StreamState>>,
}

impl Stream {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> Stream {
        Stream { worker, state: Rc::new(RefCell::new(StreamState { context_id, ..Default::default() })) }
    }

    pub fn state(&self) -> &Rc<RefCell<StreamState>> {
        &self.state
    }

    pub fn on_request_headers(&self, end_of_stream: bool) -> Action {
        request::on_headers(&self.worker, &self.state, end_of_stream)
    }

    pub fn on_request_body(&self, body_size: usize, end_of_stream: bool) -> Action {
        request::on_data(&self.worker, &self.state, body_size, end_of_stream)
    }

    pub fn on_request_trailers(&self) -> Action {
        request::on_trailers(&self.worker, &self.state)
    }

    pub fn on_response_headers(&self) -> Action {
        response::on_headers(&self.worker, &self.state)
    }

    pub fn on_response_body(&self, body_size: usize, end_of_stream: bool) -> Action {
        response::on_body(&self.worker, &self.state, body_size, end_of_stream)
    }

    pub fn on_response_trailers(&self) -> Action {
        response::on_trailers(&self.worker, &self.state)
    }

    /// A callout this stream made was answered.
    pub fn on_callout(&self, token_id: u32, num_headers: usize, body_size: usize) {
        if exchange::on_callout(&self.worker, token_id, num_headers, body_size) {
            return;
        }
        if let Some(verified) = introspect::on_callout(&self.worker, token_id, num_headers, body_size) {
            request::resume_verified(&self.worker, verified);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A leader that goes away takes its callout with it: release the requests waiting on it.
        exchange::abandon(&self.worker, &self.state);
        introspect::abandon(&self.worker, &self.state);
    }
}
