#!/usr/bin/env bash
# Installs everything (scripts/bootstrap.sh), checks the protos, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/check_protos.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
