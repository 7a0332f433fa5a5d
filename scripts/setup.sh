#!/usr/bin/env bash
# Idempotent set-up for zfvis on a fresh Debian 12 x86_64 machine: system packages, the wasm
# toolchain (Debian's rustc-web + build-std, since rustup cannot add wasm32 here), wasm-bindgen,
# trunk, wasm-opt (npm binaryen) and the headless browser for tests. Every step is skipped when
# what it installs is already there, so running it again costs seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
timed() { local s=$SECONDS; "$@"; log "$(( SECONDS - s ))s: $*"; }

# ---- 1. Debian packages: wasm-capable rustc, wasm-ld, Chromium for browser tests, node for tools
apt_pkgs=(rustc-web cargo-web rust-web-src lld-19 chromium chromium-driver nodejs npm pkg-config)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# node/npm may come from elsewhere than Debian (the machine image ships its own)
command -v node >/dev/null && command -v npm >/dev/null && missing=("${missing[@]/nodejs}") && missing=("${missing[@]/npm}")
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timed $SUDO apt-get update -q
  timed $SUDO apt-get install -y -q "${missing[@]}"
fi

# ---- 2. Debian's toolchain registered with rustup, used only for the wasm build (env.sh)
if ! rustup toolchain list | grep -q '^debian-web'; then
  rustup toolchain link debian-web /usr
fi

# ---- 3. host tools. Built from crates.io: no prebuilt binaries can be downloaded here.
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  # not --locked: its lockfile pins a crate version the registry no longer serves (~9 min)
  (cd / && timed cargo +stable install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION")
fi
if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
  # trunk 0.22.1 wants rust 1.96.1: nightly builds it; no default features drops the online
  # update check (~30 min on 2 cores, once per machine)
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  (cd / && timed cargo +nightly install trunk --version "$TRUNK_VERSION" --locked --no-default-features --features rustls)
fi

# ---- 4. npm tools: wasm-opt (binaryen; Debian's 108 breaks wasm-bindgen output), playwright-core
#      and axe-core (accessibility checks in the browser tests)
if [ ! -x "$ROOT/tests/browser/node_modules/.bin/wasm-opt" ] || [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ] \
   || [ ! -d "$ROOT/tests/browser/node_modules/axe-core" ]; then
  (cd "$ROOT/tests/browser" && timed npm install --no-audit --no-fund)
fi
# ---- 5. Python tools for the tests: the OpenAPI 3.1 validator
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  timed python3 -m pip install --quiet --disable-pip-version-check 'openapi-spec-validator==0.7.*'
fi
log "ready"
