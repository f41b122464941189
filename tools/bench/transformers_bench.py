#!/usr/bin/env python3
"""Times Hugging Face transformers' greedy `generate` (CPU or CUDA), for the side-by-side benchmarks.

One dtype per process (so two runs never share memory). Prompts are random token ids (fixed seed,
ids 10..vocab-1); EOS is suppressed with min_new_tokens, so every run makes exactly the tokens
asked for. Prints one JSON object on stdout:

  single_decode_tokens_per_s  one stream: (N-1) / (time of N new tokens - time of 1 new token)
  batch_tokens_per_s          a batch of --batch prompts: batch*N / wall time of generate
  ttft_s                      one --ttft-prompt-len prompt, max_new_tokens=1: wall time
  (+ the settings and the raw timings)

    python3 tools/bench/transformers_bench.py --model DIR --dtype float32
    python3 tools/bench/transformers_bench.py --model DIR --dtype bfloat16 --device cuda \
        --cache static --batch 64      (the GPU comparison of tests/gpu/run_device_checks.sh)

Needs PyPI torch and transformers (tools/fixtures/requirements.txt).
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_generate(model, input_ids, new_tokens, pad_id, cache=None):
    input_ids = input_ids.to(model.device)
    attention_mask = torch.ones_like(input_ids)
    extra = {"cache_implementation": cache} if cache else {}
    synchronize(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=attention_mask, do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=pad_id, **extra)
    synchronize(model.device)
    seconds = time.perf_counter() - start
    made = out.shape[1] - input_ids.shape[1]
    if made != new_tokens:
        sys.exit(f"transformers made {made} tokens, expected {new_tokens}")
    return seconds


def best_of(repeats, fn):
    return min(fn() for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--dtype", required=True, choices=["float32", "bfloat16"])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ttft-prompt-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic",
                        help="transformers' KV cache: dynamic (eager) or static (fixed shapes)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model.to(args.device)
    model.eval()
    cache = "static" if args.cache == "static" else None
    vocab = model.config.vocab_size
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    gen = torch.Generator().manual_seed(args.seed)

    def prompts(batch, length):
        return torch.randint(10, vocab, (batch, length), generator=gen)

    one = prompts(1, args.prompt_len)
    timed_generate(model, one, 2, pad_id, cache)  # warm-up: allocations, kernel selection
    t1 = best_of(args.repeats, lambda: timed_generate(model, one, 1, pad_id, cache))
    tn = best_of(args.repeats, lambda: timed_generate(model, one, args.new_tokens, pad_id, cache))
    single = (args.new_tokens - 1) / (tn - t1)

    batch = prompts(args.batch, args.prompt_len)
    timed_generate(model, batch, 2, pad_id, cache)  # warm-up at the batch's shapes
    tb = timed_generate(model, batch, args.new_tokens, pad_id, cache)
    batch_rate = args.batch * args.new_tokens / tb

    long_prompt = prompts(1, args.ttft_prompt_len)
    ttft = best_of(args.repeats, lambda: timed_generate(model, long_prompt, 1, pad_id, cache))

    json.dump({
        "implementation": "transformers",
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "dtype": args.dtype,
        "device": str(model.device),
        "device_name": (torch.cuda.get_device_name(model.device)
                        if model.device.type == "cuda" else "cpu"),
        "cache": args.cache,
        "threads": args.threads,
        "attn_implementation": model.config._attn_implementation,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "batch": args.batch,
        "ttft_prompt_len": args.ttft_prompt_len,
        "single_decode_tokens_per_s": single,
        "batch_tokens_per_s": batch_rate,
        "ttft_s": ttft,
        "raw_seconds": {"one_token": t1, "n_tokens": tn, "batch": tb, "ttft": ttft},
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
