//! mcp-authz: a proxy-wasm HTTP filter that puts OAuth in front of MCP servers.
//!
//! Decisions live in modules that make no hostcall; [`filter`] is the glue that talks to Envoy (through
//! its `Host` trait). Where to find a decision:
//!
//! | question | module |
//! |---|---|
//! | is this configuration valid? (errors name the field) | [`config`], and each section's own: [`jwt::provider`], [`metadata`], [`path`], [`mcp::config`], [`exchange::config`] |
//! | which path is this, and is it guarded? | [`path`] (readings of a path), [`authn::request_path`] |
//! | what to do with a request's head (bypass, serve metadata, refuse, authenticate)? | [`authn`] |
//! | is the token valid, and who is calling? | [`jwt`] (parsing, keys, signatures, claims, cache), [`introspection`] (opaque tokens, RFC 7662) |
//! | when are keys fetched, and who fetches? | [`jwks`] |
//! | is this MCP body allowed for this caller? | [`mcp::jsonrpc`] (reading it), [`mcp::inspect`], [`mcp::rules`] |
//! | does a token's scope cover what a rule requires (broader scopes implying narrower ones)? | [`scopes`] |
//! | which list entries may the caller see? | [`mcp::list_scan`], [`mcp::lists`] |
//! | whose session is this? | [`mcp::sessions`] |
//! | which credential goes upstream, and how is it obtained? | [`exchange`] |
//! | what does a refused client get? | [`http_reply`] (HTTP 401/400/503), [`mcp::jsonrpc_reply`] (JSON-RPC errors, the 403 step-up challenge), [`outcome`] (the reasons) |
//!
//! Glossary:
//! - **provider**: a token issuer the filter trusts, with its audiences and key source (`providers`).
//! - **principal**: the verified caller: provider, `sub`, scopes, claims ([`jwt::Principal`]).
//! - **guarded path** / **MCP path**: a path whose requests need a token / whose POST bodies are read
//!   as JSON-RPC and authorized (`paths`, `mcp.paths`).
//! - **rule**: a method (and tool, prompt or resource) with the scopes or claims it needs (`mcp.rules`).
//! - **target**: a way to obtain an upstream credential: `rfc8693` (token exchange), `connector` (the
//!   contract of seed 001, a FastMCP server exchanging `_meta` temporary tokens through a backend's
//!   `POST /api/connectors/requestAuth`), `internal` (a token the filter mints: seed 000's pattern of a
//!   gateway and a backend that both verify one JWT).
//! - **parked request**: one paused until keys, its body, or an exchange arrive (`filter::parked`).
//! - **shared data**: Envoy's per-process key-value store, how worker VMs share keys, exchanged tokens
//!   and session bindings.

pub mod authn;
pub mod bounded;
pub mod clip;
pub mod config;
pub mod exchange;
pub mod export;
pub mod http_reply;
pub mod introspection;
pub mod json_strict;
pub mod jwks;
pub mod jwt;
pub mod mcp;
pub mod metadata;
pub mod outcome;
pub mod path;
pub mod scopes;

pub mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::proxy::RootAdapter::default())
    });
}}
