#!/usr/bin/env bash
# Train one shipped model on one GPU for a time budget and export its EMA weights (issue 6).
#
#   MODEL=shapes-t2v BUDGET=480 OUT=out bash checkpoints/train_shipped.sh
#   MODEL=actions-b  BUDGET=480 OUT=out bash checkpoints/train_shipped.sh
#   (BATCH=256, INIT=none, COMPILE=false by default; EXTRA="lr=5e-4 ..." adds config overrides)
#
# One model per run: on 2026-11-23 two models sharing one H100 ran out of memory when shapes-t2v
# entered its dense + MVA phase (docs/BENCHMARKS.md, 1b).
# INIT=checkpoints/MODEL starts from the shipped weights (init_from; same config only) and the
# exported card counts all steps and lists every run, so the model grows over short GPU leases.
# The default, INIT=none, starts from scratch (the 2026-11-23 shapes-t2v recipe change: pixel ->
# autoencoder latent, ModelConfig.head_rank_problem, made the old weights unusable as a start).
# The training folder lives in runs/: rerunning the command on the same machine resumes it, and
# the card's wall time adds up every call.
# The exported fp16 weights are split into <16 MB parts under $OUT (the lent GPU's transfer limit);
# reassemble with `cat OUT/MODEL.part.* > checkpoints/MODEL/model.safetensors`, and take the new card from
# runs_small.tgz (runs/export/MODEL/model_card.json): it carries the lineage the next run builds on.
# Needs: shapes-t2v: the MiniLM caption cache in .cache/text (`python -m eflow_core data text-cache
# --out .cache/text`); actions-b: PyAV (carried as a wheel in .whl/ where the GPU image lacks it).
set -euo pipefail
MODEL=${MODEL:-shapes-t2v}
BUDGET=${BUDGET:-450}
OUT=${OUT:-out}
BATCH=${BATCH:-256}
if [ -n "${INIT:-}" ] && [ "$INIT" != none ] && [ ! -f "$INIT/model.safetensors" ]; then
  echo "INIT=$INIT has no model.safetensors"; exit 2
fi
INIT=${INIT:-none}
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
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name())")
COMMON="steps=20000 batch_size=$BATCH warmup_steps=100 model.backend=sdpa data.num_workers=12 compile=$COMPILE"
[ "$INIT" != none ] && [ -f "$INIT/model.safetensors" ] && COMMON="$COMMON init_from=$INIT"
COMMON="$COMMON ${EXTRA:-}"

case $MODEL in
  shapes-t2v)
    CMD="python3 -m eflow_core train --config shapes-t2v $COMMON data.text_cache=.cache/text" ;;
  actions-b)
    [ -f runs/actions/annotations/train.csv ] || python3 -m eflow_core data make-actions --out runs/actions \
      --classes 10 --per-class 200 > "$OUT/make-actions.log" 2>&1
    CMD="python3 -m eflow_core train --config actions-b data.root=runs/actions data.decoded_cache=runs/actions-decoded $COMMON" ;;
  *) echo "unknown MODEL=$MODEL (shapes-t2v | actions-b)"; exit 2 ;;
esac
left=$(( BUDGET - ($(date +%s) - start) ))
RESUMED=false; [ -f "runs/$MODEL/checkpoint/state.json" ] && RESUMED=true   # a rerun continues the run folder
CMD="$CMD --time-budget $left --output runs/$MODEL"
$CMD > "$OUT/$MODEL.log" 2>&1 || echo "$MODEL failed" >> "$OUT/$MODEL.log"

if [ -f "runs/$MODEL/checkpoint/state.json" ]; then
  python3 - "$MODEL" "$GPU" "$CMD" "$(( $(date +%s) - start ))" "$RESUMED" <<'PY'
import json, sys, time
from pathlib import Path
name, gpu, cmd, wall, resumed = sys.argv[1:]
extra = Path(f"runs/{name}/card_extra.json")
before = json.loads(extra.read_text()) if resumed == "true" and extra.exists() else {}
rows = open(f"runs/{name}/metrics.csv").read().strip().splitlines()
json.dump({"device": gpu, "command": cmd, "metrics_rows": len(rows) - 1, "date": time.strftime("%Y-%m-%d"),
           "wall_time_s": before.get("wall_time_s", 0) + int(wall),     # all calls of this run folder
           "calls": before.get("calls", 1 if before else 0) + 1}, extra.open("w"))
PY
  python3 -m eflow_core export --train-dir "runs/$MODEL" --out "runs/export/$MODEL" --card "runs/$MODEL/card_extra.json"
  split -b 15m "runs/export/$MODEL/model.safetensors" "$OUT/$MODEL.part."
fi
tar czf "$OUT/runs_small.tgz" runs/*/metrics.csv runs/*/config.json runs/*/init.json runs/export/*/model_card.json \
  runs/*/classes.json 2>/dev/null || true
echo "done in $(( $(date +%s) - start )) s on $GPU"
