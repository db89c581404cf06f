"""The bundled sample stack: identity provider, token-exchange server (RFC 8693), connector backend
(seed 001), tasks API (seed 000) and the MCP server, plus `local.LocalStack`, which runs them all with
Envoy on 127.0.0.1. Each server is an importable class (start/stop, hit counters, failure modes) and a
script (`python -m stack.idp --port 9000`) for docker-compose."""
