#!/usr/bin/env python3
"""Compares vaultgemma-run with Hugging Face transformers on one checkpoint directory.

Greedy decoding of the same prompt by both; reports whether the token ids agree and the largest
logprob difference. Works on the committed fixtures, on independently made random checkpoints and
on real weights (google/vaultgemma-1b downloaded to a local directory).

    python3 tools/compare/compare_with_transformers.py --model DIR --prompt "Hello" \
        [--max-new-tokens 32] [--run build/bin/vaultgemma-run] [--dtype float32]

Needs PyPI torch, transformers, sentencepiece (see tools/fixtures/requirements.txt). Exit code 0
when the ids agree and logprobs are within --tolerance, 1 otherwise.
"""
import argparse
import json
import subprocess
import sys

import sentencepiece
import torch
from transformers import AutoModelForCausalLM


def transformers_greedy(model_dir, prompt_ids, max_new_tokens, dtype):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), attn_implementation="eager")
    model.eval()
    eos = model.config.eos_token_id
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=eos,
                             pad_token_id=model.config.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)
    ids = out.sequences[0, len(prompt_ids):].tolist()
    logprobs = [torch.log_softmax(step[0].float(), dim=-1)[t].item()
                for step, t in zip(out.logits, ids)]
    return ids, logprobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--run", default="build/bin/vaultgemma-run")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    sp = sentencepiece.SentencePieceProcessor(model_file=f"{args.model}/tokenizer.model")
    prompt_ids = [sp.bos_id()] + sp.encode(args.prompt)
    ref_ids, ref_logprobs = transformers_greedy(args.model, prompt_ids, args.max_new_tokens,
                                                args.dtype)

    run = subprocess.run([args.run, "--model", args.model, "--prompt", args.prompt, "--json",
                          "--max-new-tokens", str(args.max_new_tokens)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        print(f"vaultgemma-run failed ({run.returncode}): {run.stderr.strip()}")
        return 1
    ours = json.loads(run.stdout)

    same_prompt = ours["prompt_token_ids"] == prompt_ids
    agree = 0
    for a, b in zip(ours["token_ids"], ref_ids):
        if a != b:
            break
        agree += 1
    max_diff = max((abs(a - b) for a, b in zip(ours["logprobs"][:agree], ref_logprobs[:agree])),
                   default=0.0)
    ok = same_prompt and ours["token_ids"] == ref_ids and max_diff <= args.tolerance
    print(json.dumps({"model": args.model, "prompt_ids_equal": same_prompt,
                      "tokens_generated": len(ref_ids), "tokens_agreeing": agree,
                      "max_logprob_diff": max_diff, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
