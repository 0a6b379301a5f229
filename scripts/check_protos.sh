#!/usr/bin/env bash
# The contract's checks: generated stubs fresh, buf lint (STANDARD + COMMENTS), and buf breaking (FILE)
# against protos/baseline.binpb, a committed buf image of the contract as released. Every change to
# protos/ is checked against that image, on any branch and in a fresh clone alike.
#
#   bash scripts/check_protos.sh                 # the checks
#   bash scripts/check_protos.sh --new-baseline  # rebuild the baseline from protos/ (a deliberate breaking
#                                                # change: commit it with its CHANGELOG.md entry)
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
BASELINE=protos/baseline.binpb

.venv/bin/python scripts/gen_protos.py --check   # also stages .build/proto-deps for buf
"$BUF" lint protos
echo "buf lint: clean"

if [[ "${1:-}" == "--new-baseline" ]]; then
  # Imports included (google/api ...) so the image stands alone; no source info, to keep it small.
  "$BUF" build protos --exclude-source-info -o "$BASELINE"
  echo "buf breaking: new baseline written to $BASELINE"
else
  "$BUF" breaking protos --against "$BASELINE"
  echo "buf breaking: no breaking change against $BASELINE"
fi
