# pachca-alert-bridge: build a wheel, install it with the locked dependencies into a clean
# virtualenv, ship only that. The base image is pinned to a patch release; dependencies come from
# requirements.lock, the same file .ci/run installs from (README, "Dependencies").
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY bridge ./bridge
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pachca-alert-bridge" \
      org.opencontainers.image.description="Prometheus Alertmanager and Grafana alerts as live, actionable Pachca messages" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# no compilers or build tools here: just the interpreter and the virtualenv
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /nonexistent --shell /usr/sbin/nologin bridge \
 && mkdir -p /var/lib/pachca-alert-bridge /etc/pachca-alert-bridge/rules \
 && chown bridge:bridge /var/lib/pachca-alert-bridge
COPY --from=build /opt/venv /opt/venv
# No rules are baked in: an example routing would post real alerts to example chats. Mount yours
# at /etc/pachca-alert-bridge/rules (the Helm chart does); without them `serve` refuses to start.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_PORT=8080 \
    BRIDGE_STORE=sqlite:////var/lib/pachca-alert-bridge/state.db
USER 10001:10001
WORKDIR /var/lib/pachca-alert-bridge
EXPOSE 8080
# follows BRIDGE_PORT, the port `serve` listens on
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["pachca-alert-bridge"]
CMD ["serve", "--host", "0.0.0.0", "--rules", "/etc/pachca-alert-bridge/rules"]
