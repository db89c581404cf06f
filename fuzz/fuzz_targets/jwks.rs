#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_authz_fuzz::jwks::run(data));
