#!/usr/bin/env bash
# Builds the UI to dist/ with trunk, using Debian's rustc-web (wasm32 backend) and build-std,
# since rustup cannot add the wasm32 target here. The host toolchain is untouched.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
if rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  :   # a normal machine: the rustup toolchain can build wasm itself
else
  export RUSTUP_TOOLCHAIN=debian-web
  export CARGO_UNSTABLE_BUILD_STD=std,panic_abort
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19
  export RUSTC_BOOTSTRAP=1
fi
# a separate target dir: another rustc, another target
export CARGO_TARGET_DIR="$ZFVIS_CACHE/target-web"
# trunk runs cargo --offline; fetch the crates (std's own deps too, for build-std) first
cargo fetch --target wasm32-unknown-unknown --manifest-path web/Cargo.toml
trunk build --release "$@"
