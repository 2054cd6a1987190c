#!/usr/bin/env bash
# Train the shipped models on the GPU for a time budget and export their EMA weights (issue 6).
#
#   MODEL=shapes-t2v BUDGET=480 OUT=out bash scripts/train_shipped.sh
#   MODEL="shapes-t2v actions-b" BUDGET=1200 CALL=500 OUT=out bash scripts/train_shipped.sh
#   MODEL="shapes-t2v shapes-t2v:b1024" INIT=shipped EXTRA_shapes_t2v_b1024="batch_size=1024" ...
#   (BATCH=256, INIT=none, COMPILE, CAPTURE and RESIDENT=auto (on with a GPU for shapes-t2v), EVAL= by default; EXTRA="lr=5e-4 ..." adds config overrides to
#   every run, EXTRA_shapes_t2v= / EXTRA_actions_b= to one model)
#
# A run is MODEL or MODEL:TAG. MODEL:TAG is a candidate recipe for MODEL: the same preset and data,
# EXTRA_<MODEL>'s overrides, then its own EXTRA_<MODEL>_<TAG> (dashes as underscores). It trains in
# runs/MODEL-TAG and exports as MODEL-TAG, so candidates of one model train side by side and are
# compared before one ships (2026-11-30: shapes-t2v:p1, 1x1x1 patches, beside the shipped 1x2x2).
# INIT=shipped starts a candidate from its MODEL's shipped weights too; INIT_<RUN> overrides INIT for
# one run (a candidate with another architecture cannot start from them: INIT_shapes_t2v_p1=none).
# EVAL=STEPS (e.g. 1,4) chooses each exported run's default steps and guidance (`choose-defaults`, into
# its card and RUN-defaults.json) and evaluates it at those on its GPU (`eval --steps STEPS`, 300 prompts)
# into RUN-eval.json inside the run's tgz (EVAL_PROMPTS=300 report prompts, SELECT_PROMPTS=100 selection
# prompts by default; the CPU smoke test makes them small; GUIDANCE=1.5,2,3 sets the guidance scales
# choose-defaults tries, by default its own 3,4,5: a model trained with a lower flow.guidance_min
# needs lower ones, docs/RESULTS.md "Why `actions-b` never draws"); for shapes-t2v the
# caption cache must then hold the held-out captions too (`data text-cache --include-eval`): the GPU
# image lacks the MiniLM package.
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
# run. INIT=PATH does the same from one folder (one run only, or INIT_<RUN>=PATH). The default, INIT=none,
# starts from scratch (the shapes-t2v recipe changes of 2026-11-23, pixel -> autoencoder latent, and
# 2026-11-30, 1x2x2 -> 1x1x1 patches, each made the old weights unusable).
# Out of each call, under $OUT (RUN: MODEL or MODEL-TAG): RUN.part.* (the exported fp16 weights in
# <16 MB parts, the lent GPU's transfer limit; reassemble with
# `cat OUT/RUN.part.* > checkpoints/MODEL/model.safetensors`) and RUN-run.tgz (the log, metrics.csv,
# config.json and the new model_card.json, which carries the lineage a later run builds on).
# Needs: shapes-t2v: the MiniLM caption cache in .cache/text (`python -m eflow_core data text-cache
# --out .cache/text`); actions-b: PyAV (carried as a wheel in .whl/ where the GPU image lacks it).
set -euo pipefail
MODELS=${MODEL:-shapes-t2v}
BUDGET=${BUDGET:-450}
CALL=${CALL:-$BUDGET}
OUT=${OUT:-out}
BATCH=${BATCH:-256}
EVAL=${EVAL:-}
EVAL_PROMPTS=${EVAL_PROMPTS:-300}
SELECT_PROMPTS=${SELECT_PROMPTS:-100}
GUIDANCE=${GUIDANCE:-}
[[ -z "$GUIDANCE" || "$GUIDANCE" =~ ^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$ ]] || {
  echo "GUIDANCE must be guidance scales separated by commas (e.g. 1.5,2,3)"; exit 2; }
MARGIN=${MARGIN:-$([ -n "$EVAL" ] && echo 180 || echo 60)}  # seconds of a call kept for start-up and export (+ eval)
INIT=${INIT:-none}
run_name() { echo "${1/:/-}"; }                       # shapes-t2v:p1 -> shapes-t2v-p1
run_var() { local name; name=$(run_name "$2"); local v="$1_${name//-/_}"; echo "${!v:-}"; }  # PREFIX RUN
run_init() { local own; own=$(run_var INIT "$1"); echo "${own:-$INIT}"; }
for run in $MODELS; do
  init=$(run_init "$run")
  case $init in
    none) ;;
    shipped) [ -f "checkpoints/${run%%:*}/model.safetensors" ] || {
               echo "INIT=shipped: no checkpoints/${run%%:*}/model.safetensors"; exit 2; } ;;
    *) [ -f "$init/model.safetensors" ] || { echo "INIT=$init has no model.safetensors"; exit 2; }
       [ -n "$(run_var INIT "$run")" ] || [ "$(echo $MODELS | wc -w)" -eq 1 ] || {
         echo "INIT=$init names one folder: train one MODEL, use INIT=shipped, or INIT_<RUN>"; exit 2; } ;;
  esac
done
# The fast step (docs/BENCHMARKS.md §1i, §1j): compiled blocks, the update replayed from a CUDA graph
# (eflow_core/captured_step.py) and the training set kept on the GPU (eflow_core/data/resident.py).
# auto: on a GPU for shapes-t2v, off on the CPU and for actions-b. The fast step has been measured on
# shapes-t2v only; on actions-b's first GPU run with it (2026-12-07) the resident set's build showed no
# progress in 9 minutes, a stall not reproduced on the CPU (docs/BENCHMARKS.md §1l). Set a flag to true to try it.
FAST_FLAGS="COMPILE CAPTURE RESIDENT"
for flag in $FAST_FLAGS; do
  value=$(echo "${!flag:-auto}" | tr '[:upper:]' '[:lower:]')
  case $value in true|false|auto) ;; *) echo "$flag must be true, false or auto"; exit 2 ;; esac
  printf -v "$flag" %s "$value"
done
mkdir -p "$OUT" runs
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# compiled kernels under the repository's ignored .cache/, which a warm device machine keeps between calls:
# a run resumed in the next call compiles and captures in about 30 s instead of 100 (docs/BENCHMARKS.md §1k)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.cache/triton}
if [ -d .whl ] && ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
start=$(date +%s)
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
GPU_NAME=$(python3 -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')")
EVAL_DEVICE=cuda
[ "$GPUS" -eq 0 ] && { GPUS=1; EVAL_DEVICE=cpu; }   # no GPU: one run, on the CPU (a smoke test of this script)
# data workers per model (GNU nproc obeys OMP_NUM_THREADS, exported above: count the cores without it)
WORKERS=$(( $(env -u OMP_NUM_THREADS nproc) / $(echo $MODELS | wc -w) - 2 ))
[ "$WORKERS" -gt 12 ] && WORKERS=12; [ "$WORKERS" -lt 1 ] && WORKERS=1

train_one() {   # RUN GPU_INDEX
  local run=$1 gpu=$2 cmd resumed model=${1%%:*} name init eval_args=""
  name=$(run_name "$run"); init=$(run_init "$run")
  local flag fast=false compile capture resident
  [ "$EVAL_DEVICE" = cuda ] && [ "$model" = shapes-t2v ] && fast=true      # what `auto` means for this model
  for flag in $FAST_FLAGS; do
    local value=${!flag}; [ "$value" = auto ] && value=$fast
    printf -v "$(echo "$flag" | tr '[:upper:]' '[:lower:]')" %s "$value"
  done
  local common="steps=20000 batch_size=$BATCH warmup_steps=100 model.backend=sdpa data.num_workers=$WORKERS compile=$compile capture=$capture data.resident=$resident"
  case $init in none) ;; shipped) common="$common init_from=checkpoints/$model" ;; *) common="$common init_from=$init" ;; esac
  common="$common ${EXTRA:-} $(run_var EXTRA "$model")"
  [ "$name" != "$model" ] && common="$common $(run_var EXTRA "$run")"
  case $model in
    shapes-t2v)
      cmd="python3 -m eflow_core train --config shapes-t2v $common data.text_cache=.cache/text"
      eval_args="--text-cache .cache/text" ;;
    actions-b)
      [ -f runs/actions/annotations/train.csv ] || python3 -m eflow_core data make-actions --out runs/actions \
        --classes 10 --per-class 200 > "runs/$model-data.log" 2>&1
      cmd="python3 -m eflow_core train --config actions-b data.root=runs/actions data.decoded_cache=runs/actions-decoded $common" ;;
    *) echo "unknown MODEL=$model (shapes-t2v | actions-b)"; return 2 ;;
  esac
  local stop=$(( CALL - MARGIN - ($(date +%s) - start) ))
  resumed=false; [ -f "runs/$name/checkpoint/state.json" ] && resumed=true   # a rerun continues the run folder
  cmd="$cmd --time-budget $BUDGET --stop-after $stop --output runs/$name"
  CUDA_VISIBLE_DEVICES=$gpu $cmd > "runs/$name.log" 2>&1 || echo "$name failed" >> "runs/$name.log"
  if [ -f "runs/$name/checkpoint/state.json" ]; then
    # the card's command, device and date come from the trainer's own run record (checkpoint/state.json);
    # this adds what only the script sees: wall time and calls, summed over the calls of this run folder
    python3 - "$name" "$(( $(date +%s) - start ))" "$resumed" <<'PY'
import json, sys
from pathlib import Path
name, wall, resumed = sys.argv[1:]
extra = Path(f"runs/{name}/card_extra.json")
before = json.loads(extra.read_text()) if resumed == "true" and extra.exists() else {}
rows = open(f"runs/{name}/metrics.csv").read().strip().splitlines()
json.dump({"metrics_rows": len(rows) - 1, "wall_time_s": before.get("wall_time_s", 0) + int(wall),
           "calls": before.get("calls", 1 if before else 0) + 1}, extra.open("w"))
PY
    CUDA_VISIBLE_DEVICES=$gpu python3 -m eflow_core export --train-dir "runs/$name" --out "runs/export/$name" \
      --card "runs/$name/card_extra.json"
    split -b 15m "runs/export/$name/model.safetensors" "$OUT/$name.part."
    # EVAL: first the card's default steps / guidance / guidance interval, on selection prompts (seed 1,
    # heldout-frames), then the report at those defaults (seed 0, the held-out frames and words)
    [ -z "$EVAL" ] || CUDA_VISIBLE_DEVICES=$gpu python3 -m eflow_core choose-defaults --checkpoint "runs/export/$name" \
      --device "$EVAL_DEVICE" --prompts "$SELECT_PROMPTS" ${GUIDANCE:+--guidance "$GUIDANCE"} $eval_args --write-card --out "runs/$name-defaults.json" \
      >> "runs/$name.log" 2>&1 \
      || echo "choose-defaults of $name failed" >> "runs/$name.log"
    [ -z "$EVAL" ] || CUDA_VISIBLE_DEVICES=$gpu python3 -m eflow_core eval --checkpoint "runs/export/$name" \
      --steps "$EVAL" --prompts "$EVAL_PROMPTS" --device "$EVAL_DEVICE" \
      $eval_args --out "runs/$name-eval.json" >> "runs/$name.log" 2>&1 \
      || echo "eval of $name failed" >> "runs/$name.log"
  fi
  tar czf "$OUT/$name-run.tgz" runs/$name.log runs/$name/metrics.csv runs/$name/config.json \
    $(ls runs/$name/init.json runs/$name/classes.json runs/export/$name/model_card.json runs/$model-data.log runs/$name-eval.json runs/$name-defaults.json \
      2>/dev/null) || true
}

i=0
for run in $MODELS; do
  [ "$i" -ge "$GPUS" ] && { echo "more runs than GPUs ($GPUS): $run not trained"; break; }
  train_one "$run" "$i" &
  i=$(( i + 1 ))
done
wait
echo "done in $(( $(date +%s) - start )) s on $GPUS x $GPU_NAME"
