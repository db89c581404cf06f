"""Test harness for the mcp-authz integration suite: Envoy launcher, JWKS server, echo upstream, keys."""
