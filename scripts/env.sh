# Sourced by the project's scripts: pinned tool versions and the build locations.
# Builds are cached outside the clone, so a fresh clone reuses them.
export WASM_BINDGEN_VERSION=0.2.130   # crate (pinned with =) and CLI must be equal
export TRUNK_VERSION=0.22.1
export ZFVIS_CACHE="${ZFVIS_CACHE:-$HOME/.cache/zfvis}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ZFVIS_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"
ZFVIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ZFVIS_ROOT/tests/browser/node_modules/.bin:$PATH"
