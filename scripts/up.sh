#!/usr/bin/env bash
# Installs everything (scripts/bootstrap.sh) and starts the whole mesh on the offline default
# profile: the gateway (gRPC :50051, HTTP :8080) and every capability service. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/capmesh up "$@"
