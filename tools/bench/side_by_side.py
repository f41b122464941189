#!/usr/bin/env python3
"""The side-by-side benchmark: transformers against vaultgemma-server on one checkpoint, one run.

In one run on one machine, with the same prompt lengths, greedy decoding and the same number of
new tokens:
  1. the memory read bandwidth (build/bench/bandwidth_probe, all cores), for the roofline;
  2. transformers `generate` on CPU in float32 and in bfloat16 (tools/bench/transformers_bench.py,
     one process each): one stream, a batch of --streams prompts, and time to first token for a
     --ttft-prompt-len prompt;
  3. vaultgemma-server on the same checkpoint, driven by vaultgemma-bench over gRPC: one stream,
     --streams concurrent streams, and the same time to first token.
Prints one table of figures and ratios and writes it as JSON (--out).

Definitions (the same for both sides):
  single-stream decode tokens/s: transformers (N-1)/(t(N new) - t(1 new)); ours 1 / mean time per
      output token (vaultgemma-bench's TPOT: (e2e - TTFT) / (N - 1)).
  aggregate tokens/s of S streams: S*N / wall time of the batch (ours: vaultgemma-bench's output
      tokens/s at concurrency S with S requests, prefill included as in transformers' batch).
  time to first token: a P-token prompt and one new token (ours: vaultgemma-bench's TTFT p50).
  roofline: decode must read every weight once per step, so tokens/s <= bandwidth / weight bytes
      (weights as that side stores them: float32 4 bytes, bfloat16 2 bytes per parameter); for S
      streams the bound is S times that. Time to first token is compute-bound: no roofline.

    python3 tools/bench/side_by_side.py --build build --model DIR [--out FILE.json]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def log(message):
    print(f"== {message}", file=sys.stderr, flush=True)


def run_json(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"side_by_side: {' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout)


def weight_parameters(model_dir):
    """Parameters in the checkpoint's safetensors files, read from their headers."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2}
    params = 0
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            begin, end = tensor["data_offsets"]
            params += (end - begin) // sizes[tensor["dtype"]]
    return params


def weight_dtype_bytes(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        dtype = json.load(f).get("torch_dtype", "float32")
    return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype], dtype


class Server:
    """vaultgemma-server on a free port, until closed."""

    def __init__(self, build, model, streams):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [os.path.join(build, "bin", "vaultgemma-server"), "--model", model, "--listen",
             "127.0.0.1:0", "--no-metrics", "--max-num-seqs", str(streams)],
            stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            self.log.seek(0)
            found = re.search(r"\(port (\d+)\)", self.log.read())
            if found:
                self.address = f"127.0.0.1:{found.group(1)}"
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.log.seek(0)
        sys.exit(f"side_by_side: vaultgemma-server did not start:\n{self.log.read()}")

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=120)


def bench(build, address, out_dir, name, concurrency, requests, input_len, output_len, warmup):
    """One vaultgemma-bench stage; returns its results.json stage."""
    out = os.path.join(out_dir, name)
    argv = [os.path.join(build, "bin", "vaultgemma-bench"), "--server", address,
            "--concurrency", str(concurrency), "--num-requests", str(requests),
            "--warmup-requests", str(warmup), "--input-len", str(input_len),
            "--output-len", str(output_len), "--seed", "1", "--out", out, "--fail-on-error"]
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"side_by_side: {' '.join(argv)} failed ({result.returncode}):\n"
                 f"{result.stdout}\n{result.stderr}")
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)["stages"][0]


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build", help="build directory (bin/, bench/)")
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--out", help="write the table as JSON here")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--ttft-prompt-len", type=int, default=512)
    parser.add_argument("--python", default=sys.executable, help="python with torch+transformers")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log("memory bandwidth")
    bandwidth = run_json([os.path.join(args.build, "bench", "bandwidth_probe")])
    bw = bandwidth["read_bytes_per_s_all_threads"]
    params = weight_parameters(args.model)
    our_bytes_per_param, our_dtype = weight_dtype_bytes(args.model)

    tf = {}
    for dtype in ("float32", "bfloat16"):
        log(f"transformers {dtype}")
        tf[dtype] = run_json([args.python, os.path.join(HERE, "transformers_bench.py"),
                              "--model", args.model, "--dtype", dtype,
                              "--prompt-len", str(args.prompt_len),
                              "--new-tokens", str(args.new_tokens), "--batch", str(args.streams),
                              "--ttft-prompt-len", str(args.ttft_prompt_len)])

    log("vaultgemma-server")
    server = Server(args.build, args.model, args.streams)
    with tempfile.TemporaryDirectory() as work:
        try:
            single = bench(args.build, server.address, work, "single", 1, 3, args.prompt_len,
                           args.new_tokens, 1)
            many = bench(args.build, server.address, work, "streams", args.streams, args.streams,
                         args.prompt_len, args.new_tokens, 1)
            ttft = bench(args.build, server.address, work, "ttft", 1, 2, args.ttft_prompt_len, 1,
                         1)
        finally:
            server.close()
    ours = {
        "single_decode_tokens_per_s": 1.0 / single["tpot_s"]["mean"],
        "batch_tokens_per_s": many["output_token_throughput"],
        "ttft_s": ttft["ttft_s"]["p50"],
    }

    def roofline(bytes_per_param, streams=1):
        return streams * bw / (params * bytes_per_param)

    rows = []
    for key, label, higher_better, streams in (
            ("single_decode_tokens_per_s", "single-stream decode, tokens/s", True, 1),
            ("batch_tokens_per_s", f"{args.streams} streams, aggregate tokens/s", True,
             args.streams),
            ("ttft_s", f"time to first token, {args.ttft_prompt_len}-token prompt, s", False,
             None)):
        row = {
            "metric": key, "label": label, "higher_is_better": higher_better,
            "transformers_float32": tf["float32"][key],
            "transformers_bfloat16": tf["bfloat16"][key],
            "ours": ours[key],
            "ours_over_transformers_float32": ours[key] / tf["float32"][key],
            "ours_over_transformers_bfloat16": ours[key] / tf["bfloat16"][key],
        }
        if streams is not None:
            row["roofline_fraction"] = {
                "transformers_float32": tf["float32"][key] / roofline(4, streams),
                "transformers_bfloat16": tf["bfloat16"][key] / roofline(2, streams),
                "ours": ours[key] / roofline(our_bytes_per_param, streams),
            }
        rows.append(row)

    best_tf = lambda row: (max if row["higher_is_better"] else min)(  # noqa: E731
        row["transformers_float32"], row["transformers_bfloat16"])
    targets = [
        ("single-stream decode >= 3x transformers float32",
         rows[0]["ours_over_transformers_float32"] >= 3),
        ("single-stream decode >= 1.5x transformers bfloat16",
         rows[0]["ours_over_transformers_bfloat16"] >= 1.5),
        (f"{args.streams} streams >= 5x transformers' batch of {args.streams} (faster dtype)",
         rows[1]["ours"] / best_tf(rows[1]) >= 5),
        (f"time to first token <= 0.5x transformers' (faster dtype)",
         rows[2]["ours"] / best_tf(rows[2]) <= 0.5),
    ]

    print(f"\nside-by-side on {args.model} ({params / 1e9:.2f} B parameters, ours {our_dtype}), "
          f"{started}")
    print(f"machine: {bandwidth['cores']} cores, read bandwidth {bw / 1e9:.1f} GB/s (all cores), "
          f"{bandwidth['read_bytes_per_s_one_thread'] / 1e9:.1f} GB/s (one core); "
          f"prompt {args.prompt_len} tokens, {args.new_tokens} new, greedy")
    header = (f"{'':44} {'tf f32':>9} {'tf bf16':>9} {'ours':>9} {'/tf f32':>8} {'/tf bf16':>8} "
              f"{'roofline: tf f32 / tf bf16 / ours':>34}")
    print(header)
    for row in rows:
        roof = row.get("roofline_fraction")
        roof_text = ("compute-bound" if roof is None else
                     f"{roof['transformers_float32']:.0%} / {roof['transformers_bfloat16']:.0%} / "
                     f"{roof['ours']:.0%}")
        print(f"{row['label']:44} {fmt(row['transformers_float32']):>9} "
              f"{fmt(row['transformers_bfloat16']):>9} {fmt(row['ours']):>9} "
              f"{fmt(row['ours_over_transformers_float32']):>7}x "
              f"{fmt(row['ours_over_transformers_bfloat16']):>7}x {roof_text:>34}")
    print("targets (issue 5; reaching them is the CPU-performance issue's work):")
    for text, met in targets:
        print(f"  [{'met' if met else 'not met'}] {text}")

    if args.out:
        with open(args.out, "w") as f:
            json.dump({"started_at": started, "model": os.path.abspath(args.model),
                       "parameters": params, "ours_weight_dtype": our_dtype,
                       "bandwidth": bandwidth, "settings": vars(args), "transformers": tf,
                       "ours": {"single": single, "streams": many, "ttft": ttft},
                       "rows": rows,
                       "targets": [{"target": t, "met": m} for t, m in targets]}, f, indent=2)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
