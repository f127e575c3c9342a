# pachca-alert-bridge: build a wheel, install it into a clean virtualenv, ship only that.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# no compilers or build tools here: just the interpreter and the virtualenv
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /nonexistent --shell /usr/sbin/nologin bridge \
 && mkdir -p /var/lib/pachca-alert-bridge /etc/pachca-alert-bridge/rules \
 && chown bridge:bridge /var/lib/pachca-alert-bridge
COPY --from=build /opt/venv /opt/venv
COPY rules/example.yaml /etc/pachca-alert-bridge/rules/rules.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_STORE=sqlite:////var/lib/pachca-alert-bridge/state.db
USER 10001:10001
WORKDIR /var/lib/pachca-alert-bridge
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["pachca-alert-bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--rules", "/etc/pachca-alert-bridge/rules"]
