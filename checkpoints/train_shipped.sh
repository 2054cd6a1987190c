#!/usr/bin/env bash
# Train the shipped models on the GPU for a time budget and export their EMA weights (issue 6).
#
#   MODEL=shapes-t2v BUDGET=480 OUT=out bash checkpoints/train_shipped.sh
#   MODEL="shapes-t2v actions-b" BUDGET=1200 CALL=500 OUT=out bash checkpoints/train_shipped.sh
#   (BATCH=256, INIT=none, COMPILE=false by default; EXTRA="lr=5e-4 ..." adds config overrides to every
#   model, EXTRA_shapes_t2v= / EXTRA_actions_b= to one)
#
# Several models train side by side, the i-th on GPU i (one model per GPU: on 2026-11-23 two models
# sharing one H100 ran out of memory, docs/BENCHMARKS.md 1b).
# BUDGET is the seconds of training of the whole run, summed over calls (`train --time-budget`): the
# step total is fitted to it and the phases of App. C scale along. CALL (default: BUDGET) bounds this
# call: training stops and saves after CALL seconds of wall time minus a margin for start-up and
# export, and rerunning the same command on the same machine resumes the run folder in runs/ with
# the step total the first call fitted. The card's wall time adds up every call.
# INIT=shipped starts every model from its shipped weights in checkpoints/MODEL (init_from; same config
# only; a fresh optimizer and phase schedule), and the exported card counts all steps and lists every
# run. INIT=PATH does the same from one folder (one model only). The default, INIT=none, starts from scratch
# (the 2026-11-23 shapes-t2v recipe change, pixel -> autoencoder latent, made the old weights unusable).
# Out of each call, under $OUT: MODEL.part.* (the exported fp16 weights in <16 MB parts, the lent
# GPU's transfer limit; reassemble with `cat OUT/MODEL.part.* > checkpoints/MODEL/model.safetensors`)
# and MODEL-run.tgz (the log, metrics.csv, config.json and the new model_card.json, which carries the
# lineage a later run builds on).
# Needs: shapes-t2v: the MiniLM caption cache in .cache/text (`python -m eflow_core data text-cache
# --out .cache/text`); actions-b: PyAV (carried as a wheel in .whl/ where the GPU image lacks it).
set -euo pipefail
MODELS=${MODEL:-shapes-t2v}
BUDGET=${BUDGET:-450}
CALL=${CALL:-$BUDGET}
OUT=${OUT:-out}
BATCH=${BATCH:-256}
MARGIN=${MARGIN:-60}          # seconds of a call kept for start-up (data, model, resume) and export
INIT=${INIT:-none}
for model in $MODELS; do
  case $INIT in
    none) ;;
    shipped) [ -f "checkpoints/$model/model.safetensors" ] || { echo "INIT=shipped: no checkpoints/$model/model.safetensors"; exit 2; } ;;
    *) [ -f "$INIT/model.safetensors" ] || { echo "INIT=$INIT has no model.safetensors"; exit 2; }
       [ "$(echo $MODELS | wc -w)" -eq 1 ] || { echo "INIT=$INIT names one folder: train one MODEL, or use INIT=shipped"; exit 2; } ;;
  esac
done
COMPILE=$(echo "${COMPILE:-false}" | tr '[:upper:]' '[:lower:]')   # true: compiled blocks (measure first:
case $COMPILE in true|false) ;; *) echo "COMPILE must be true or false"; exit 2 ;; esac   # train_step.py --modes compile)
mkdir -p "$OUT" runs
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
if [ -d .whl ] && ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
start=$(date +%s)
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
GPU_NAME=$(python3 -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')")
[ "$GPUS" -eq 0 ] && GPUS=1     # no GPU: one model, on the CPU (a smoke test of this script)
# data workers per model (GNU nproc obeys OMP_NUM_THREADS, exported above: count the cores without it)
WORKERS=$(( $(env -u OMP_NUM_THREADS nproc) / $(echo $MODELS | wc -w) - 2 ))
[ "$WORKERS" -gt 12 ] && WORKERS=12; [ "$WORKERS" -lt 1 ] && WORKERS=1

train_one() {   # MODEL GPU_INDEX
  local model=$1 gpu=$2 cmd resumed
  local common="steps=20000 batch_size=$BATCH warmup_steps=100 model.backend=sdpa data.num_workers=$WORKERS compile=$COMPILE"
  case $INIT in none) ;; shipped) common="$common init_from=checkpoints/$model" ;; *) common="$common init_from=$INIT" ;; esac
  local own="EXTRA_${model//-/_}"
  common="$common ${EXTRA:-} ${!own:-}"
  case $model in
    shapes-t2v)
      cmd="python3 -m eflow_core train --config shapes-t2v $common data.text_cache=.cache/text" ;;
    actions-b)
      [ -f runs/actions/annotations/train.csv ] || python3 -m eflow_core data make-actions --out runs/actions \
        --classes 10 --per-class 200 > "runs/$model-data.log" 2>&1
      cmd="python3 -m eflow_core train --config actions-b data.root=runs/actions data.decoded_cache=runs/actions-decoded $common" ;;
    *) echo "unknown MODEL=$model (shapes-t2v | actions-b)"; return 2 ;;
  esac
  local stop=$(( CALL - MARGIN - ($(date +%s) - start) ))
  resumed=false; [ -f "runs/$model/checkpoint/state.json" ] && resumed=true   # a rerun continues the run folder
  cmd="$cmd --time-budget $BUDGET --stop-after $stop --output runs/$model"
  CUDA_VISIBLE_DEVICES=$gpu $cmd > "runs/$model.log" 2>&1 || echo "$model failed" >> "runs/$model.log"
  if [ -f "runs/$model/checkpoint/state.json" ]; then
    # the card's command, device and date come from the trainer's own run record (checkpoint/state.json);
    # this adds what only the script sees: wall time and calls, summed over the calls of this run folder
    python3 - "$model" "$(( $(date +%s) - start ))" "$resumed" <<'PY'
import json, sys
from pathlib import Path
name, wall, resumed = sys.argv[1:]
extra = Path(f"runs/{name}/card_extra.json")
before = json.loads(extra.read_text()) if resumed == "true" and extra.exists() else {}
rows = open(f"runs/{name}/metrics.csv").read().strip().splitlines()
json.dump({"metrics_rows": len(rows) - 1, "wall_time_s": before.get("wall_time_s", 0) + int(wall),
           "calls": before.get("calls", 1 if before else 0) + 1}, extra.open("w"))
PY
    CUDA_VISIBLE_DEVICES=$gpu python3 -m eflow_core export --train-dir "runs/$model" --out "runs/export/$model" \
      --card "runs/$model/card_extra.json"
    split -b 15m "runs/export/$model/model.safetensors" "$OUT/$model.part."
  fi
  tar czf "$OUT/$model-run.tgz" runs/$model.log runs/$model/metrics.csv runs/$model/config.json \
    $(ls runs/$model/init.json runs/$model/classes.json runs/export/$model/model_card.json runs/$model-data.log \
      2>/dev/null) || true
}

i=0
for model in $MODELS; do
  [ "$i" -ge "$GPUS" ] && { echo "more models than GPUs ($GPUS): $model not trained"; break; }
  train_one "$model" "$i" &
  i=$(( i + 1 ))
done
wait
echo "done in $(( $(date +%s) - start )) s on $GPUS x $GPU_NAME"
