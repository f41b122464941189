#!/usr/bin/env bash
# The GPU checks of issue 7 as one prepared command for a lent device machine.
#
# The device image has CUDA 13, CMake, ninja, PyTorch and transformers, but no gRPC, Abseil or
# protobuf and no network. So everything is built HERE and carried there:
#
#   tests/gpu/run_device_checks.sh prepare [BUILD_DIR]   # here: build, stage into .device/
#   tests/gpu/run_device_checks.sh run                    # there, from the repository root
#
# `prepare` builds the CUDA plugin, the GPU tests, the server, the benchmark programs and
# make_random_checkpoint in BUILD_DIR (default build-cuda, Release, CUDA on), then copies them into
# .device/build/ (the build tree's own layout, so the plugin is still found at <exe>/../lib/) with
# every shared library they load except glibc's, the C++ runtime's and CUDA's own, which the
# device machine has in newer versions. Pass `.device` in the device tool's `carry`.
#
# `run` writes everything under $OUT (or .device/out when OUT is unset): the card, each GPU test's
# log and XML, a random checkpoint of the 1B shape made with make_random_checkpoint, our engine's
# throughput on it (batch_benchmark --device cuda) and transformers' (eager, static cache), and
# prints a short table last. A step that fails is reported in the table and the run goes on; the
# exit status is 1 if any test failed. A dry run without a GPU: OUT=/tmp/x VG_CHECK_SHAPE=tiny ... run
set -u -o pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
stage="$repo/.device"

die() { echo "run_device_checks: $*" >&2; exit 2; }

prepare() {
  local build="${1:-$repo/build-cuda}"
  command -v nvcc >/dev/null || die "nvcc not found: the CUDA toolkit is needed to prepare"
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVG_ENABLE_CUDA=ON \
    -DVG_BUILD_BENCHMARKS=ON >/dev/null || die "cmake failed in $build"
  local targets=(vaultgemma_cuda vaultgemma-server make_random_checkpoint batch_benchmark
                 decode_benchmark)
  # Every test program that tests/gpu/ defines.
  local gpu_tests
  gpu_tests=$(grep -rhoE 'vg_add_test\(NAME [a-z_0-9]+' "$repo/tests/gpu" | awk '{print $2}' | sort -u)
  [ -n "$gpu_tests" ] || die "no vg_add_test in tests/gpu"
  # shellcheck disable=SC2206
  targets+=($gpu_tests)
  cmake --build "$build" --target "${targets[@]}" || die "the build failed"

  rm -rf "$stage/build"
  mkdir -p "$stage/build/bin" "$stage/build/lib" "$stage/build/tests" "$stage/build/bench" \
    "$stage/syslib"
  local elves=()
  cp "$build/lib/libvaultgemma_cuda.so" "$stage/build/lib/" && elves+=("$stage/build/lib/libvaultgemma_cuda.so")
  for f in bin/vaultgemma-server bin/make_random_checkpoint bench/batch_benchmark \
           bench/decode_benchmark; do
    [ -x "$build/$f" ] || die "$build/$f was not built"
    cp "$build/$f" "$stage/build/$f"
    elves+=("$stage/build/$f")
  done
  for t in $gpu_tests; do
    cp "$build/tests/$t" "$stage/build/tests/$t"
    elves+=("$stage/build/tests/$t")
  done
  strip --strip-unneeded "${elves[@]}" 2>/dev/null
  # Shared libraries: all that ldd resolves, except the C library family, the C++ runtime and CUDA.
  ldd "${elves[@]}" 2>/dev/null | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
      libcuda.so*|libcudart.so*|libcublas*|libnvrtc*|libnvJitLink*) ;;
      *) cp -L "$lib" "$stage/syslib/" ;;
    esac
  done
  # The tests open fixtures and binaries by the absolute paths of this checkout and build.
  printf '%s\n%s\n' "$repo" "$build" >"$stage/paths"
  du -sh "$stage" | awk '{print "run_device_checks: staged " $1 " in .device (carry it)"}'
}

# --- on the device machine -----------------------------------------------------------------------
run() {
  [ -f "$stage/paths" ] || die ".device/paths missing: run 'prepare' here and carry .device"
  local out="${OUT:-$stage/out}"
  mkdir -p "$out"
  local src build
  src=$(sed -n 1p "$stage/paths")
  build=$(sed -n 2p "$stage/paths")
  # Recreate the absolute paths compiled into the tests (VG_SOURCE_DIR, VG_BINARY_DIR).
  if [ "$src" != "$repo" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$repo" "$src"; fi
  if [ ! -e "$build" ]; then mkdir -p "$(dirname "$build")" && ln -s "$stage/build" "$build"; fi
  export LD_LIBRARY_PATH="$stage/syslib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONUNBUFFERED=1

  local rows=() failed=0
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
    nvcc --version 2>/dev/null | tail -1
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  } >"$out/device.txt" 2>&1
  local card
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

  # 1. The GPU tests.
  for t in "$stage"/build/tests/*; do
    local name
    name=$(basename "$t")
    timeout 300 "$t" --gtest_output="xml:$out/$name.xml" >"$out/$name.log" 2>&1
    local rc=$?
    local summary
    summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) *\] [0-9]+ test' "$out/$name.log" | tr -s ' ' | paste -sd ' ')
    [ $rc -eq 0 ] || failed=1
    rows+=("test $name: rc $rc ${summary:-no summary (see $name.log)}")
  done

  # 2. A random checkpoint of the released model's shape, BF16 (about 2 GB). VG_CHECK_SHAPE=tiny
  # makes a dry run of this script quick on a machine without a GPU.
  local shape="${VG_CHECK_SHAPE:-1b}" model=/tmp/vg-check-model
  rm -rf "$model"
  if "$stage/build/bin/make_random_checkpoint" --out "$model" --shape "$shape" --dtype bf16 \
      >"$out/checkpoint.log" 2>&1; then
    # 3. Our engine on the GPU: one stream, 64 and 256 streams, ~512-token contexts.
    timeout 300 "$stage/build/bench/batch_benchmark" --model "$model" --device cuda \
      --streams 1,64,256 --prompt-len 512 --new-tokens 64 >"$out/engine_bench.txt" 2>&1
    rows+=("engine batch_benchmark rc $?: $(grep -E '^ *(streams|[0-9]+ ) ' "$out/engine_bench.txt" | tr -s ' ' | paste -sd ';' | cut -c1-400)")
    # The same without CUDA graphs, and in deterministic mode: what each costs or saves.
    for mode in enforce-eager deterministic; do
      timeout 200 "$stage/build/bench/batch_benchmark" --model "$model" --device cuda \
        --streams 1,64 --prompt-len 512 --new-tokens 64 "--$mode" >"$out/engine_bench_$mode.txt" 2>&1
      rows+=("engine batch_benchmark --$mode rc $?: $(grep -E '^ *(streams|[0-9]+ ) ' "$out/engine_bench_$mode.txt" | tr -s ' ' | paste -sd ';' | cut -c1-300)")
    done
    # The rooflines: the device's copy bandwidth measured now (bytes read + written), the BF16
    # weights read once per step, and each stream's K and V (BF16) read once per step.
    rows+=("$(python3 - "$model" "$out/engine_bench.txt" <<'PY' 2>&1
import glob, json, os, re, sys
import torch
model, bench = sys.argv[1], sys.argv[2]
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20): y.copy_(x)
end.record(); torch.cuda.synchronize()
bw = 2 * (1 << 30) * 20 / (start.elapsed_time(end) / 1e3)
weights = sum(os.path.getsize(f) for f in glob.glob(os.path.join(model, "*.safetensors")))
c = json.load(open(os.path.join(model, "config.json")))
kv_per_pos = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 2
rates = {int(m.group(1)): float(m.group(2)) for m in
         re.finditer(r"^\s*(\d+)\s+([\d.]+)", open(bench).read(), re.M)}
out = ["copy bandwidth %.2f TB/s, weights %.2f GB" % (bw / 1e12, weights / 1e9)]
for n, rate in sorted(rates.items()):
    ctx = 512 + 32  # the prompt plus half the new tokens, on average
    roof = n * bw / (weights + n * ctx * kv_per_pos)
    out.append("%d streams: %.0f tok/s = %.0f%% of the roofline %.0f" % (n, rate, 100 * rate / roof, roof))
print("rooflines: " + "; ".join(out))
PY
)")
    # 4. transformers on the same GPU, eager (dynamic cache) and with a static cache.
    for cache in dynamic static; do
      timeout 300 python3 "$repo/tools/bench/transformers_bench.py" --model "$model" \
        --dtype bfloat16 --device cuda --cache "$cache" --batch 64 --prompt-len 512 \
        --new-tokens 64 --ttft-prompt-len 512 >"$out/transformers_$cache.json" \
        2>"$out/transformers_$cache.log"
      rows+=("transformers $cache rc $?: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("single %.0f tok/s, batch %d: %.0f tok/s" % (d["single_decode_tokens_per_s"], d["batch"], d["batch_tokens_per_s"]))' "$out/transformers_$cache.json" 2>/dev/null || echo 'failed, see log')")
    done
  else
    rows+=("make_random_checkpoint failed: see checkpoint.log")
  fi

  echo "===== device checks on ${card:-an unknown card} ====="
  printf '%s\n' "${rows[@]}" | tee "$out/summary.txt"
  return $failed
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) echo "usage: tests/gpu/run_device_checks.sh prepare [BUILD_DIR] | run" >&2; exit 2 ;;
esac
