//! mcp-authz: a proxy-wasm HTTP filter that puts OAuth in front of MCP servers.
//!
//! Decisions live in host-testable modules (`config`, `jwt`, `jwks`, `authn`, `reply`); `filter` is the
//! thin layer that talks to Envoy. This file only wires the root context.

pub mod authn;
pub mod bounded;
pub mod clip;
pub mod config;
pub mod exchange;
pub mod http_reply;
pub mod json_strict;
pub mod jwks;
pub mod jwt;
pub mod mcp;
pub mod metadata;
pub mod path;

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::root::Root::default())
    });
}}
