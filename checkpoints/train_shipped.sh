#!/usr/bin/env bash
# Train the two shipped models concurrently on one GPU (issue 6) and export their EMA weights.
#
#   BUDGET=450 OUT=out bash checkpoints/train_shipped.sh
#
# Training folders live in runs/ (resumable: rerun the script and both continue from their checkpoints).
# The exported fp16 weights are split into <16 MB parts under $OUT (the lent GPU's transfer limit);
# reassemble with `cat NAME.part.* > checkpoints/NAME/model.safetensors`.
# Needs: the MiniLM caption cache in .cache/text (`python -m eflow_core data text-cache --out .cache/text`)
# and PyAV (carried as a wheel in .whl/ where the GPU image lacks it).
set -euo pipefail
BUDGET=${BUDGET:-450}
OUT=${OUT:-out}
mkdir -p "$OUT" runs
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
start=$(date +%s)
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name())")

SHAPES_CMD="python3 -m eflow_core train --config shapes-t2v steps=20000 batch_size=384 warmup_steps=100 model.backend=sdpa data.num_workers=6 data.text_cache=.cache/text --time-budget $BUDGET --output runs/shapes-t2v"
$SHAPES_CMD > "$OUT/shapes-t2v.log" 2>&1 &
shapes_pid=$!

[ -f runs/actions/annotations/train.csv ] || python3 -m eflow_core data make-actions --out runs/actions --classes 10 --per-class 200 > "$OUT/make-actions.log" 2>&1
left=$(( BUDGET - ($(date +%s) - start) ))
ACTIONS_CMD="python3 -m eflow_core train --config actions-b data.root=runs/actions steps=20000 batch_size=384 warmup_steps=100 model.backend=sdpa data.num_workers=6 --time-budget $left --output runs/actions-b"
$ACTIONS_CMD > "$OUT/actions-b.log" 2>&1 || echo "actions-b failed" >> "$OUT/actions-b.log"
wait $shapes_pid || echo "shapes-t2v failed" >> "$OUT/shapes-t2v.log"

for name in shapes-t2v actions-b; do
  [ -f runs/$name/checkpoint/state.json ] || continue
  cmd=$([ $name = shapes-t2v ] && echo "$SHAPES_CMD" || echo "$ACTIONS_CMD")
  python3 - "$name" "$GPU" "$cmd" <<'PY'
import json, sys
name, gpu, cmd = sys.argv[1:]
rows = open(f"runs/{name}/metrics.csv").read().strip().splitlines()
json.dump({"device": gpu, "command": cmd, "metrics_rows": len(rows) - 1}, open(f"runs/{name}/card_extra.json", "w"))
PY
  python3 -m eflow_core export --train-dir runs/$name --out runs/export/$name --card runs/$name/card_extra.json
  split -b 15m runs/export/$name/model.safetensors "$OUT/$name.part."
done
tar czf "$OUT/runs_small.tgz" runs/*/metrics.csv runs/*/config.json runs/export/*/model_card.json runs/*/classes.json 2>/dev/null || true
echo "done in $(( $(date +%s) - start )) s on $GPU"
