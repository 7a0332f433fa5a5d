#!/usr/bin/env bash
# Checks a CUDA build of zfvis on a GPU machine and prints its figures:
#   1. parity: forward, deconvnet projections of every layer and an occlusion sweep on the GPU
#      against the CPU kernels, within 1e-4 of each output's scale (`zfvis check-device`);
#   2. throughput on the GPU and, for the ratio, on this machine's CPU: forward batch 1 and 64,
#      a projection, a 196-position sweep;
#   3. the probe index of a folder (Imagenette val) on the GPU;
#   4. one training epoch on the GPU (Imagenette train), unless ZFVIS_CHECK_TRAIN=0.
#
# Needs no Rust: carry the binary built here (scripts/build-cuda.sh) and the repository.
#   scripts/cuda-check.sh [BINARY] [DATA]
# BINARY: the CUDA build (default: bin/zfvis-cuda, unpacked from bin/zfvis-cuda.xz if need be); DATA: a folder with train/ and val/
# (default: ../shared/datasets/imagenette; steps 3–4 are skipped with a message when absent).
# The CUDA 13 libraries (cuBLAS, cuRAND, NVRTC) are found in the system or in PyTorch's
# nvidia-* wheels; the driver must support CUDA 13 (>= 580).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-bin/zfvis-cuda}"
if [ ! -e "$BIN" ] && [ -f "$BIN.xz" ]; then
  xz -dc "$BIN.xz" > "$BIN.partial" && chmod +x "$BIN.partial" && mv "$BIN.partial" "$BIN"
fi
DATA="${2:-../shared/datasets/imagenette}"
WEIGHTS="${ZFVIS_WEIGHTS:-model-weights/zfnet-imagenette.safetensors}"
OUT="${ZFVIS_CHECK_OUT:-${TMPDIR:-/tmp}/zfvis-cuda-check}"
mkdir -p "$OUT"

if [ ! -x "$BIN" ]; then
  echo "cuda-check: no binary at $BIN (build one with scripts/build-cuda.sh)" >&2
  exit 2
fi

# Libraries the binary links: the system's, else the nvidia-* wheels next to PyTorch.
if ! LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" ldd "$BIN" | grep -q "not found"; then :; else
  for py in python3 python; do
    dirs="$($py - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
libs = set()
for r in roots:
    for pat in ("nvidia/cu13/lib", "nvidia/*/lib"):
        for d in glob.glob(os.path.join(r, pat)):
            libs.add(d)
print(":".join(sorted(libs)))
EOF
)"
    if [ -n "$dirs" ]; then export LD_LIBRARY_PATH="$dirs:${LD_LIBRARY_PATH:-}"; break; fi
  done
fi
if ldd "$BIN" | grep "not found"; then
  echo "cuda-check: the libraries above are missing; install CUDA 13 or pip's nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc" >&2
  exit 2
fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "(nvidia-smi not available)"
nproc | sed 's/^/CPU cores: /'
"$BIN" --version

status=0
echo "== 1–2. parity and throughput on the GPU"
"$BIN" check-device --device cuda --weights "$WEIGHTS" --batch 64 | tee "$OUT/check-cuda.txt" || status=1
echo "== 2. the same throughput on the CPU (for the ratio)"
"$BIN" check-device --device cpu --weights "$WEIGHTS" --batch 64 --runs 3 | grep -A9 '^throughput' | tee "$OUT/check-cpu.txt"

if [ -d "$DATA/val" ]; then
  echo "== 3. probe index of $DATA/val on the GPU"
  start=$(date +%s.%N)
  "$BIN" index --device cuda --batch 64 --weights "$WEIGHTS" --probe "$DATA/val" --out "$OUT/index.json" || status=1
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "index: %.1f s\n", e - s }'
else
  echo "== 3. skipped: no $DATA/val"
fi

if [ -d "$DATA/train" ] && [ "${ZFVIS_CHECK_TRAIN:-1}" != 0 ]; then
  echo "== 4. one training epoch on the GPU"
  rm -rf "$OUT/run"
  start=$(date +%s.%N)
  "$BIN" train --device cuda --data "$DATA" --out "$OUT/run" --epochs 1 --conv1-std 0.001 \
    --micro-batch 128 --checkpoint-secs 600 2>&1 | grep -v ' step ' | tail -n 8 || status=1
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "one epoch: %.1f s\n", e - s }'
else
  echo "== 4. skipped: no $DATA/train (or ZFVIS_CHECK_TRAIN=0)"
fi
exit $status
