# The stand-in for the official python:3.11-slim-bookworm on a machine that cannot pull it: Debian's
# Python 3.11 in a venv that comes first on PATH, so `python` and `pip` mean what they mean in the official
# image (Debian's own python3 refuses `pip install` outside a venv, PEP 668). Built by
# integration/docker/images.py FROM the debootstrap base; works FROM debian:bookworm-slim as well.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/python

# PIP_CERT: pip uses the system's CA bundle (with the machine's extra CAs the base image was given).
ENV PATH=/opt/python/bin:$PATH LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python"]
