#!/usr/bin/env bash
# `make bench`: the benchmarks that are not tests. Numbers are reported, never asserted.
#   tools/bench/run_benchmarks.sh [BUILD_DIR]
# BENCH_DATA (default BUILD_DIR/bench-data) holds the generated ~2 GB random 1B-shape checkpoint.
set -euo pipefail
build=${1:-build}
data=${BENCH_DATA:-$build/bench-data}
ckpt=$data/vaultgemma-1b-shape-bf16

if [ ! -f "$ckpt/model.safetensors" ] || [ ! -f "$ckpt/tokenizer.model" ]; then
  echo "== creating the random 1B-shape BF16 checkpoint in $ckpt"
  "$build/bin/make_random_checkpoint" --out "$ckpt" --shape 1b --dtype bf16
fi

echo "== single-stream decode, 1B shape, BF16"
"$build/bench/decode_benchmark" --model "$ckpt" --prompt-len 16 --steps 32

echo "== continuous batching, 1B shape, BF16: aggregate decode tokens/s at 1-16 streams"
"$build/bench/batch_benchmark" --model "$ckpt" --streams 1,4,8,16 --prompt-len 16 --new-tokens 32

for b in "$build"/bench/*_benchmark; do
  case "$(basename "$b")" in decode_benchmark | batch_benchmark) continue ;; esac
  echo "== $(basename "$b")"
  "$b" --benchmark_min_time=0.5
done
