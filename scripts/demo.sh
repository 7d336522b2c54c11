#!/usr/bin/env bash
# The main job on a fresh machine, no download needed: install, generate the demo street
# data (the same procedural scenes rendered by day and by night), train a CPU-sized UNIT
# day <-> night, and translate the held-out day scenes to night.
# Environment: DEMO_STEPS (default 3000), DEMO_SIZE (default 64), DEMO_OUT (default runs/demo-street).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unit=.venv/bin/unit
steps=${DEMO_STEPS:-3000}
size=${DEMO_SIZE:-64}
out=${DEMO_OUT:-runs/demo-street}
data=data/demo/street-$size

[ -f "$data/report.json" ] || "$unit" ingest demo-street --out "$data" --train 500 --test 16 --size "$size"

resume=()
[ -f "$out/checkpoints/latest.pt" ] && resume=(--resume)
"$unit" train --params params.yaml "${resume[@]}" \
    --set data.root="$data" --set data.image_size="$size" --set train.out_dir="$out" \
    --set train.max_steps="$steps" --set train.checkpoint_every=500 --set train.log_every=50 \
    --set model.width=32 --set model.dis_width=32 --set model.dis_layers=4 \
    --set train.precision=bf16

"$unit" translate --checkpoint "$out/checkpoints/latest.pt" --direction a2b \
    "$data/day/test_paired" --out "$out/translations/day2night"

cat <<MSG

Done.
  sample grids (input | reconstruction | translation | cycle):  $out/samples/
  held-out day scenes translated to night:                      $out/translations/day2night/
  their true night renderings, for comparison:                  $data/night/test_paired/
  training log (losses, pairs/s):                               $out/train_log.jsonl
  checkpoint:                                                   $out/checkpoints/latest.pt
MSG
