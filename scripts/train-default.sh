#!/usr/bin/env bash
# Trains (or resumes) the default model on Imagenette exactly as it was trained, then evaluates
# it, stores it as fp16 in model-weights/ and records its val accuracy in the manifest.
# Runs for hours on a CPU: interrupt at will (Ctrl-C writes a checkpoint) and run again to resume.
#   DATA=../shared/datasets/imagenette scripts/train-default.sh
#
# Five stages (model-weights/README.md tells why):
#  1. the paper-recipe run, conv1 from N(0, 1e-3), 20 epochs of its 30-epoch schedule (lr 1e-2,
#     1e-3 from epoch 20); its conv stack after epoch 20 is committed as
#     model-weights/imagenette-paper/snapshots/epoch-020.safetensors (conv-only, fp16). That file is
#     the input of stage 2, so stage 1 runs only with STAGE1=1 (about 20 h on 2 cores).
#  2. from that conv stack, a fresh classifier: 2 epochs with the convs frozen (lr 1e-2, 1e-3),
#     then the whole network, 1 epoch at lr 1e-3 and 1 at 1e-4 (about 1 h).
#  3. that model (as fp16) with the same run's epoch-5 conv1 (its most oriented: anisotropy 0.556,
#     against 0.515 at epoch 20), kept frozen while conv2–fc8 adapt to it: 4 epochs at lr 1e-3,
#     2 at 1e-4 (about 1 h 40 min).
#  4. a warm restart of that model at the paper's lr, conv1 still frozen: 3 epochs at 1e-2, 2 at
#     1e-3, 1 at 1e-4 (about 1 h 30 min).
#  5. a second warm restart, from stage 4's model, with a longer high-rate phase: 4 epochs at 1e-2,
#     2 at 1e-3, 1 at 1e-4, conv1 still frozen (about 2 h 10 min).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
DATA="${DATA:-$ROOT/../shared/datasets/imagenette}"
PAPER="${PAPER:-$ZFVIS_CACHE/runs/imagenette-paper}"
RUN="${RUN:-$ZFVIS_CACHE/runs/imagenette-paper-ft}"
RUN3="${RUN3:-$ZFVIS_CACHE/runs/imagenette-conv1e5}"
RUN4="${RUN4:-$ZFVIS_CACHE/runs/imagenette-stage4}"
RUN5="${RUN5:-$ZFVIS_CACHE/runs/imagenette-stage5}"
SNAPSHOT=model-weights/imagenette-paper/snapshots/epoch-020.safetensors
[ -d "$DATA/train" ] || { echo "no Imagenette at $DATA (set DATA=DIR with train/ and val/)"; exit 1; }
cargo build -p zfvis
ZFVIS="$CARGO_TARGET_DIR/debug/zfvis"
# train RUN --epochs N --lr-drops L [flags of a new run]: starts RUN, or resumes it with only its
# schedule (the first four arguments; a resume with the run's own schedule is a no-op change)
train() {
  local run="$1"; shift
  local schedule=("$@")
  if [ -f "$run/config.json" ]; then
    "$ZFVIS" train --resume "$run" "${schedule[@]:0:4}"
  else
    "$ZFVIS" train --data "$DATA" --out "$run" "${schedule[@]}"
  fi
}

if [ "${STAGE1:-0}" = 1 ] || [ ! -f "$SNAPSHOT" ]; then
  # conv1 starts at N(0, 1e-3): a He start (0.117) sits above the clipping radius, is clipped at
  # once and barely moves, which left the previous model's conv1 looking random
  train "$PAPER" --epochs 20 --lr-drops 20,27 --seed 1 --conv1-std 0.001
  "$ZFVIS" export --weights "$PAPER/snapshots/epoch-020.safetensors" --out "$SNAPSHOT" --conv-only --f16
fi
train "$RUN" --epochs 4 --lr-drops 2,4 --seed 1 --init-from "$SNAPSHOT" --freeze-conv-epochs 2
[ -f "$RUN/model-f16.safetensors" ] ||
  "$ZFVIS" export --weights "$RUN/model.safetensors" --out "$RUN/model-f16.safetensors" --f16
train "$RUN3" --epochs 6 --lr-drops 5 --seed 3 --lr 0.001 --init-from "$RUN/model-f16.safetensors" \
  --init-layer-from conv1=model-weights/imagenette-paper/snapshots/epoch-005.safetensors --freeze-convs 1
train "$RUN4" --epochs 6 --lr-drops 4,6 --seed 4 --init-from "$RUN3/model.safetensors" --freeze-convs 1
train "$RUN5" --epochs 7 --lr-drops 5,7 --seed 5 --init-from "$RUN4/model.safetensors" --freeze-convs 1
"$ZFVIS" export --weights "$RUN5/model.safetensors" --out model-weights/zfnet-imagenette.safetensors --f16
"$ZFVIS" eval --data "$DATA/val" --weights model-weights/zfnet-imagenette.safetensors --record
cp "$RUN5/log.csv" "$RUN5/epochs.csv" "$RUN5/curves.png" model-weights/
echo "default model written to model-weights/ (commit it with its manifest and logs)"
