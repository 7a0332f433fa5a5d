#!/usr/bin/env bash
# Builds zfvis with candle's CUDA backend on a machine without a GPU or a system CUDA toolkit:
# scripts/setup-cuda.sh installs nvcc and the CUDA 13.0 libraries from PyPI, then a release build
# with `--features cuda` (its own target folder, so CPU builds stay cached) is stripped and
# copied to bin/zfvis-cuda (and bin/zfvis-cuda.xz, to carry), ready to carry to a GPU machine and check with scripts/cuda-check.sh.
#
# With your own CUDA toolkit: set CUDA_HOME (and CUDA_COMPUTE_CAP if no GPU is in this machine,
# e.g. 90 for H100/H200, 89 for L4/RTX 40xx, 80 for A100) and it is used instead of the wheels.
# The GPU's driver must support the toolkit's CUDA version.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
if [ -z "${CUDA_HOME:-}" ]; then
  bash scripts/setup-cuda.sh
  source "$ZFVIS_CACHE/cuda-${ZFVIS_CUDA_VERSION:-13.0}/env.sh"
fi
export CARGO_TARGET_DIR="$ZFVIS_CACHE/target-cuda"
echo "build-cuda: CUDA_HOME=$CUDA_HOME, compute capability ${CUDA_COMPUTE_CAP:-detected}"
cargo build --release -p zfvis --features "cuda${ZFVIS_FEATURES:+,$ZFVIS_FEATURES}"
mkdir -p bin
strip -o bin/zfvis-cuda.partial "$CARGO_TARGET_DIR/release/zfvis"
mv bin/zfvis-cuda.partial bin/zfvis-cuda
xz -T0 -6 -c bin/zfvis-cuda > bin/zfvis-cuda.xz.partial && mv bin/zfvis-cuda.xz.partial bin/zfvis-cuda.xz
echo "build-cuda: bin/zfvis-cuda ($(du -h bin/zfvis-cuda | cut -f1); $(du -h bin/zfvis-cuda.xz | cut -f1) as .xz); it needs:"
ldd bin/zfvis-cuda | grep -E "cuda|cublas|curand|nvrtc" | sed 's/=>.*//' || true
