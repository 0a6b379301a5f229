#!/usr/bin/env bash
# The contract's checks: generated stubs fresh, buf lint (STANDARD + COMMENTS), buf breaking (FILE)
# against the main branch.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf

.venv/bin/python scripts/gen_protos.py --check   # also stages .build/proto-deps for buf
"$BUF" lint protos
echo "buf lint: clean"

# buf compares images: build main's protos with today's staged google/* dependencies.
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:protos 2>/dev/null; then
  against=.build/against-main
  rm -rf "$against" && mkdir -p "$against"
  git archive main protos | tar -x -C "$against"
  cp -r .build/proto-deps "$against/proto-deps"
  printf 'version: v2\nmodules:\n  - path: protos\n  - path: proto-deps\n' > "$against/buf.yaml"
  (cd "$against" && "$OLDPWD/$BUF" build protos -o ../against-main.binpb)
  "$BUF" breaking protos --against .build/against-main.binpb
  echo "buf breaking: no breaking change against main"
else
  echo "buf breaking: skipped, no main branch with protos/ yet"
fi
