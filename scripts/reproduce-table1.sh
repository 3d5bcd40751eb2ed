#!/usr/bin/env bash
# Reproduces the READ paper's Table 1 (and Table 3, Figure 1) with this tool:
# fetch t5-base and GLUE, run the sweep of sweeps.yaml (every method, every
# architecture candidate of the paper's Table 8, 32 TPE trials per study),
# choose each method's architecture as Appendix D.2 does, re-run it with
# every seed, and render the tables and figures into results/output/.
#
# Re-running continues where it stopped (the studies are in sweeps.db).
#
#   scripts/reproduce-table1.sh [--tiny] [--methods read,lora] [--datasets sst2,cola] [--parallel N] [--out results/output]
#
# --tiny runs the whole pipeline on the bundled GLUE fixture with a small
# random T5 (examples/tiny.yaml): a minute or two on a laptop; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=0 methods="" datasets="" parallel="" out=results/output
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1 ;;
    --methods) methods="$2"; shift ;;
    --datasets) datasets="$2"; shift ;;
    --parallel) parallel="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "reproduce-table1: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

only=""
for m in ${methods//,/ }; do only="${only:+$only,}method=$m"; done
for d in ${datasets//,/ }; do only="${only:+$only,}dataset=$d"; done
args=()
[ -n "$only" ] && args+=(--only "$only")
[ -n "$parallel" ] && args+=(--parallel "$parallel")

go build -o bin/sweep ./cmd/sweep
if [ "$tiny" = 1 ]; then
  config=examples/tiny.yaml
  [ -f models/tiny-t5/model.safetensors ] || bin/sweep model new --out models/tiny-t5 --spiece examples/spiece-tiny.model
else
  config=sweeps.yaml
  bin/sweep fetch model t5-base
  bin/sweep fetch glue --dir data/glue
fi

bin/sweep run "$config" "${args[@]}"
bin/sweep final "$config" "${args[@]}"

mkdir -p "$out"
bin/sweep table --config "$config" --with-paper --format md --out "$out/tables.md"
bin/sweep table --config "$config" --format csv --table 1 --out "$out/table1.csv"
bin/sweep table --config "$config" --format latex --out "$out/tables.tex"
bin/sweep table --config "$config" --format json --out "$out/tables.json"
bin/sweep plot --config "$config" --out "$out/figures"
echo "reproduce-table1: tables and figures are in $out/"
cat "$out/tables.md"
