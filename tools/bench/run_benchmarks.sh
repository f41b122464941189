#!/usr/bin/env bash
# `make bench`: the benchmarks that are not tests. Numbers are reported, never asserted.
#   tools/bench/run_benchmarks.sh [BUILD_DIR]
# BENCH_DATA (default BUILD_DIR/bench-data) holds the generated ~2 GB random 1B-shape checkpoint
# and side_by_side.json. BENCH_PYTHON is a python with PyPI torch and transformers (default:
# python3 when it has them, else a virtual environment made in BUILD_DIR/bench-venv).
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

echo "== prefill of a 512-token prompt against the float32 multiply-add peak"
"$build/bench/decode_benchmark" --model "$ckpt" --prompt-len 512 --steps 4

echo "== single-stream decode at context ~1024, KV cache in float32 and in bfloat16"
"$build/bench/decode_benchmark" --model "$ckpt" --prompt-len 1000 --steps 16
"$build/bench/decode_benchmark" --model "$ckpt" --prompt-len 1000 --steps 16 \
  --kv-cache-dtype bfloat16

echo "== continuous batching, 1B shape, BF16: aggregate decode tokens/s at 1-16 streams"
"$build/bench/batch_benchmark" --model "$ckpt" --streams 1,4,8,16 --prompt-len 16 --new-tokens 32

for b in "$build"/bench/*_benchmark; do
  case "$(basename "$b")" in decode_benchmark | batch_benchmark) continue ;; esac
  echo "== $(basename "$b")"
  "$b" --benchmark_min_time=0.5
done

echo "== side by side with transformers (1B shape; several minutes)"
python=${BENCH_PYTHON:-python3}
if ! "$python" -c 'import torch, transformers' 2> /dev/null; then
  venv=$build/bench-venv
  if [ ! -x "$venv/bin/python" ]; then
    echo "== installing torch and transformers from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$(dirname "$0")/../fixtures/requirements.txt"
  fi
  python=$venv/bin/python
fi
"$python" "$(dirname "$0")/side_by_side.py" --build "$build" --model "$ckpt" \
  --out "$data/side_by_side.json"
