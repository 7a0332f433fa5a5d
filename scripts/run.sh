#!/usr/bin/env bash
# Set up (idempotent), build, and run zfvis on the default model at http://127.0.0.1:${PORT:-8080}/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/env.sh
cargo build -p zfvis ${ZFVIS_FEATURES:+--features "$ZFVIS_FEATURES"}
bash scripts/build-web.sh
ZFVIS="$CARGO_TARGET_DIR/debug/zfvis"
"$ZFVIS" init-weights   # writes the seeded placeholder only if no trained weights are there
echo "zfvis: open http://127.0.0.1:${PORT:-8080}/ (Ctrl+C stops)"
exec "$ZFVIS" serve --addr "127.0.0.1:${PORT:-8080}" --device "${ZFVIS_DEVICE:-cpu}" "$@"
