#!/usr/bin/env bash
# Creates the demo checkpoint: VaultGemma architecture with RANDOM weights (it produces nonsense:
# real weights cannot ship with the code) and a SentencePiece tokenizer trained here by spm_train
# with Gemma's flags. Idempotent.
#   tools/demo/make_demo_model.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?build dir}
out=${2:?output dir}
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -f "$out/config.json" ] && [ -f "$out/model.safetensors" ] && [ -f "$out/tokenizer.model" ]; then
  exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/tools/tokenizers/corpus.txt" "$work/corpus.txt"
(cd "$work" && spm_train --input=corpus.txt --model_prefix=demo --vocab_size=1000 \
  --model_type=bpe --byte_fallback=true --split_digits=true \
  --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 --pad_piece='<pad>' --eos_piece='<eos>' \
  --bos_piece='<bos>' --unk_piece='<unk>' --add_dummy_prefix=false \
  --remove_extra_whitespaces=false --normalization_rule_name=identity \
  --allow_whitespace_only_pieces=true --user_defined_symbols='<start_of_turn>,<end_of_turn>' \
  --num_threads=1 --minloglevel=2 > spm_train.log 2>&1) || {
  cat "$work/spm_train.log" >&2
  exit 1
}
"$build/bin/make_random_checkpoint" --out "$out" --shape demo --dtype bf16 --seed 7 \
  --tokenizer "$work/demo.model"
echo "demo model (random weights: its text is nonsense) in $out"
