#!/usr/bin/env bash
# Set up (idempotent), build, and run zfvis on the default model at http://127.0.0.1:${PORT:-8080}/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/env.sh
case ",${ZFVIS_FEATURES:-}," in
  *,cuda,*)   # the CUDA toolkit from PyPI unless CUDA_HOME names one (scripts/build-cuda.sh)
    if [ -z "${CUDA_HOME:-}" ]; then
      bash scripts/setup-cuda.sh
      source "$ZFVIS_CACHE/cuda-${ZFVIS_CUDA_VERSION:-13.0}/env.sh"
    fi
    export CARGO_TARGET_DIR="$ZFVIS_CACHE/target-cuda" ;;
esac
cargo build -p zfvis ${ZFVIS_FEATURES:+--features "$ZFVIS_FEATURES"}
bash scripts/build-web.sh
ZFVIS="$CARGO_TARGET_DIR/debug/zfvis"
"$ZFVIS" init-weights   # writes the seeded placeholder only if no trained weights are there
# The probe set for top-9 views: $ZFVIS_PROBE, else Imagenette val beside the checkout (never
# copied into the repo), else the committed demo photos. Indexed once per model, then cached.
PROBE="${ZFVIS_PROBE:-$ROOT/../shared/datasets/imagenette/val}"
if [ ! -d "$PROBE" ]; then
  echo "zfvis: no probe set at $PROBE (set ZFVIS_PROBE=DIR for your own);"
  echo "       using the 12 demo photos in web/assets/demo instead"
  PROBE="$ROOT/web/assets/demo"
fi
echo "zfvis: open http://127.0.0.1:${PORT:-8080}/ once it says 'listening'; the probe index builds"
echo "       in the background the first time (progress in the UI and /api/health). Ctrl+C stops."
# every model in model-weights/ is served (the default first; the UI's picker and comparison
# show the others when there are several), and the paper-recipe run's snapshots (Fig. 4)
exec "$ZFVIS" serve --addr "127.0.0.1:${PORT:-8080}" --device "${ZFVIS_DEVICE:-cpu}" --warm-top9 \
  --probe "$PROBE" --models "$ROOT/model-weights" \
  --evolution "$ROOT/model-weights/imagenette-paper" "$@"
