#!/usr/bin/env bash
# Installs what a CUDA build of zfvis needs, without root and without a system CUDA toolkit:
# nvcc, the CUDA headers and the libraries candle links against, from NVIDIA's PyPI wheels,
# arranged as a toolkit under $ZFVIS_CACHE/cuda-$ZFVIS_CUDA_VERSION/home. Prints the line to
# source before building. Users with their own toolkit skip this and set CUDA_HOME instead.
#
# The driver library (libcuda.so.1) is not on PyPI: it comes with the GPU's driver. For linking
# only, this script makes a stub that defines every driver entry point cudarc declares (as
# NVIDIA's toolkit does in lib64/stubs); at run time the real driver is loaded.
#
#   scripts/setup-cuda.sh && source "$ZFVIS_CACHE/cuda-13.0/env.sh"
#   ZFVIS_FEATURES=cuda scripts/build-cuda.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"

# CUDA 13.0: the oldest CUDA 13, so its PTX loads on any CUDA 13 driver (>= 580).
CUDA_VERSION="${ZFVIS_CUDA_VERSION:-13.0}"
case "$CUDA_VERSION" in
  13.0) PINS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
              nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-curand==10.4.0.35
              nvidia-cublas==13.0.2.14 nvidia-nvvm==13.0.88) ;;
  *) echo "setup-cuda: no pinned wheels for CUDA $CUDA_VERSION (known: 13.0)" >&2; exit 2 ;;
esac

ROOT="$ZFVIS_CACHE/cuda-$CUDA_VERSION"
PY="$ROOT/py"
HOME_DIR="$ROOT/home"
if [ ! -x "$PY/nvidia/cu13/bin/nvcc" ] || [ ! -d "$PY/nvidia/cu13/nvvm" ]; then
  echo "setup-cuda: installing ${PINS[*]} into $PY"
  # pip --target does not merge into an existing nvidia/ folder: install afresh.
  rm -rf "$PY" "$PY.partial"
  python3 -m pip install --quiet --no-deps --target "$PY.partial" "${PINS[@]}"
  mv "$PY.partial" "$PY"
fi
WHEEL="$PY/nvidia/cu13"

mkdir -p "$HOME_DIR/lib64/stubs"
ln -sfn "$WHEEL/bin" "$HOME_DIR/bin"
ln -sfn "$WHEEL/include" "$HOME_DIR/include"
ln -sfn "$WHEEL/nvvm" "$HOME_DIR/nvvm"
# Unversioned names for the linker (-lcublas finds libcublas.so).
for lib in "$WHEEL"/lib/lib*.so.*; do
  base="$(basename "$lib")"
  ln -sfn "$lib" "$HOME_DIR/lib64/$base"
  ln -sfn "$lib" "$HOME_DIR/lib64/${base%%.so.*}.so"
done
ln -sfn "$WHEEL/lib/libcudart_static.a" "$HOME_DIR/lib64/libcudart_static.a"
ln -sfn "$WHEEL/lib/libcudadevrt.a" "$HOME_DIR/lib64/libcudadevrt.a"

# The driver stub, from the entry points cudarc's bindings declare.
STUB="$HOME_DIR/lib64/stubs/libcuda.so"
if [ ! -f "$STUB" ]; then
  REGISTRY="$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n1)"
  SYS="$(ls -d "$REGISTRY"cudarc-*/src/driver/sys/mod.rs | sort -V | tail -n1)"
  if [ ! -f "$SYS" ]; then
    echo "setup-cuda: cudarc's sources are not in $REGISTRY; run 'cargo fetch' first" >&2
    exit 1
  fi
  C="$ROOT/libcuda-stub.c"
  {
    echo "/* Link-time stub of libcuda.so.1, generated from $SYS. Never loaded at run time. */"
    grep -oP '^pub unsafe fn \Kcu\w+' "$SYS" | sort -u | sed 's/.*/int &(void) { return 999; }/'
  } > "$C"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB" "$C"
  echo "setup-cuda: driver stub with $(grep -c '^int' "$C") entry points"
fi

cat > "$ROOT/env.sh" <<EOF
# Source before a CUDA build of zfvis (written by scripts/setup-cuda.sh).
export CUDA_HOME="$HOME_DIR"
export PATH="$HOME_DIR/bin:\$PATH"
# The GPU is not on the build machine: name its compute capability (H200/H100: 90).
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF
"$HOME_DIR/bin/nvcc" --version | tail -n2
echo "setup-cuda: ready; now: source $ROOT/env.sh"
