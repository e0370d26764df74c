#!/usr/bin/env bash
# The paper's own setting (§4.1, §4.4) for users with GPUs and the Hugging Face Hub:
# GPT-Neo 125M / 1.3B / 2.7B, the five published 128-sample forget sets, every method,
# memorization metrics, the utility suite, and one report per model.
#
#   bash benchmarks/paper_protocol.sh                 # all three models, all methods
#   MODELS="125m" METHODS="icu kumpr" RUNS="0 1" bash benchmarks/paper_protocol.sh
#
# Each run is one process on one GPU (configs/gpt-neo-*.yaml) unless LAUNCH says otherwise. Results go to
# runs/paper/<model>/<method>-<run>/ and runs/paper/<model>/report.html; a run that
# was killed continues with --resume when the script is started again.
set -euo pipefail
cd "$(dirname "$0")/.."
ICU="${ICU:-.venv/bin/icu-unlearn}"
# the unlearning runs; e.g. the paper's ZeRO-2 on 4 GPUs:
#   LAUNCH=".venv/bin/accelerate launch --config_file configs/accelerate/zero2.yaml --num_processes 4 -m icu_unlearn"
LAUNCH="${LAUNCH:-$ICU}"
MODELS="${MODELS:-125m 1.3b 2.7b}"
METHODS="${METHODS:-icu kumpr kl llmu dpo npo}"
RUNS="${RUNS:-0 1 2 3 4}"
LIMIT="${LIMIT:-}"   # e.g. LIMIT=500 for a quicker utility suite; empty: every example

for size in $MODELS; do
  root="runs/paper/$size"
  dirs=()
  for method in $METHODS; do
    for run in $RUNS; do
      out="$root/$method-$run"
      dirs+=("$out")
      if [ -f "$out/model/config.json" ]; then continue; fi
      resume=()
      if [ -f "$out/checkpoints/LATEST" ]; then resume=(--resume); fi
      $LAUNCH run "configs/gpt-neo-$size.yaml" --set "method=$method" \
        --set "forget=lm-extraction:128_$run" --out "$out" "${resume[@]}"
      "$ICU" utility --model "$out/model" --out "$out" ${LIMIT:+--limit "$LIMIT"}
    done
  done
  "$ICU" report "${dirs[@]}" --out "$root/report.html" --redact
done
