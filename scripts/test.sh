#!/usr/bin/env bash
# Every test of zfvis, from a fresh machine: set-up, lint, Rust unit/parity/HTTP tests, the UI
# build and the headless-Chromium tests against the real server. `.ci/run` calls this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/env.sh
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
start=$SECONDS

step "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

step "Rust tests (ops, parity with PyTorch, HTTP against the real server)"
# tests that need Imagenette are #[ignore]d with the reason; run them when the set is here
if [ -d "${ZFVIS_IMAGENETTE:-$ROOT/../shared/datasets/imagenette}/val" ]; then
  cargo test -- --include-ignored
else
  echo "no Imagenette beside the checkout: its tests stay ignored (listed as such below)"
  cargo test
fi

step "UI build (trunk → dist/)"
bash scripts/build-web.sh

step "browser tests (headless Chromium, real server, default model)"
cargo build -p zfvis
export ZFVIS_BIN="$CARGO_TARGET_DIR/debug/zfvis"
"$ZFVIS_BIN" init-weights   # the seeded placeholder, unless trained weights are committed
export ZFVIS_WEIGHTS="$ROOT/model-weights/zfnet-imagenette.safetensors"
node --test tests/browser/

step "all tests passed in $(( SECONDS - start ))s (screenshots in tests/artifacts/)"
