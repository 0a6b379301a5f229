#!/usr/bin/env bash
# Installs everything capmesh needs on a fresh Debian machine: system packages (redis-server,
# espeak-ng), buf from npm, and a Python virtual environment in .venv with the project in it.
# Safe to run again: each step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)  # the web console's browser test
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/buf ] || [ ! -d node_modules/playwright-core ] || [ package.json -nt node_modules/.package-lock.json ]; then
  log "npm install (buf, playwright-core)"
  npm install --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.capmesh-installed
# xds-protos ships its own, older copies of googleapis-common-protos' and opentelemetry-proto's
# files (google/api, google/rpc, google/longrunning, opentelemetry/proto, ...), and whichever pip
# installs last wins. The gateway and the OTLP exporter need the newer ones, and envoy's messages
# import only what both copies define, so those two packages go back on top after every install.
reinstall_shared_protos() {
  local specs=() name version
  for name in googleapis-common-protos opentelemetry-proto; do
    version=$(.venv/bin/pip show "$name" | sed -n 's/^Version: //p')
    specs+=("$name==$version")
  done
  log "pip install --force-reinstall --no-deps ${specs[*]} (over xds-protos' copies)"
  .venv/bin/pip install -q --force-reinstall --no-deps "${specs[@]}"
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  # The CPU build of torch lies on this machine's disk; installing the pin first keeps pip from
  # resolving a multi-GB CUDA build for the range in pyproject.toml.
  log "pip install torch==2.13.0 (CPU build)"
  .venv/bin/pip install -q torch==2.13.0
  log "pip install -e .[dev]"
  .venv/bin/pip install -q -e '.[dev]'
  reinstall_shared_protos
  touch "$stamp"
elif ! .venv/bin/python -c "
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope" 2>/dev/null; then
  reinstall_shared_protos
fi
log "ready"
