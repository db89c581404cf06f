//! MCP awareness: JSON-RPC bodies, rules over methods and targets, list filtering, MCP-shaped denials.

pub mod arguments;
pub mod config;
pub mod glob;
pub mod head;
pub mod inspect;
pub mod jsonrpc;
pub mod jsonrpc_reply;
pub mod list_scan;
pub mod lists;
pub mod mirror;
pub mod pins;
pub mod rules;
pub mod sessions;
