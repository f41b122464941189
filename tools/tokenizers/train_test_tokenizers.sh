#!/usr/bin/env bash
# Trains the small SentencePiece BPE models the tokenizer parity tests use, with Debian's
# spm_train (package `sentencepiece`), from the committed corpus.txt. Deterministic: one thread,
# fixed seed, no sentence sampling. Writes only .model files to tests/fixtures/tokenizers/.
#
#   tools/tokenizers/train_test_tokenizers.sh            # from the repository root
#
# After retraining, regenerate the newline goldens (make_newline_goldens.py) and rerun
# `ctest -R tokenizer`.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
corpus="${root}/tools/tokenizers/corpus.txt"
out="${root}/tests/fixtures/tokenizers"
mkdir -p "${out}"
command -v spm_train >/dev/null || { echo "spm_train not found: run 'make deps'" >&2; exit 1; }

# Gemma-like user-defined symbols: chat turns, a mask, unused slots, runs of newlines, of the
# whitespace symbol U+2581 and of tabs, and HTML tags (including <s>, which is also spm's default
# bos piece name; our bos piece is <bos>).
nl=$'\n'
tab=$'\t'
ws=$'\xe2\x96\x81'
symbols="<start_of_turn>,<end_of_turn>,<mask>,[toxicity=0],<unused0>,<unused1>,<unused2>"
run=""
for _ in 1 2 3 4 5 6 7 8; do run+="${nl}"; symbols+=",${run}"; done
run="${ws}"
for _ in 2 3 4 5 6 7 8; do run+="${ws}"; symbols+=",${run}"; done
run="${tab}"
for _ in 2 3 4; do run+="${tab}"; symbols+=",${run}"; done
for tag in table tr td b i p s code div; do symbols+=",<${tag}>,</${tag}>"; done
symbols+=",<br>"

common=(
  --input=corpus.txt
  --model_type=bpe
  --num_threads=1
  --random_seed=1234
  --input_sentence_size=0
  --shuffle_input_sentence=false
  --byte_fallback=true
  --split_digits=true
  --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3
  --pad_piece="<pad>" --eos_piece="<eos>" --bos_piece="<bos>" --unk_piece="<unk>"
  --allow_whitespace_only_pieces=true
  --user_defined_symbols="${symbols}"
  --minloglevel=2
)
gemma_flags=(
  --add_dummy_prefix=false
  --remove_extra_whitespaces=false
  --normalization_rule_name=identity
)

train() {
  local name="$1"
  shift
  # Relative paths: the trainer spec records --input and --model_prefix in the .model file.
  (cd "${tmp}" && spm_train "${common[@]}" --model_prefix="${name}" "$@" >"${name}.log" 2>&1) || {
    cat "${tmp}/${name}.log" >&2
    exit 1
  }
  cp "${tmp}/${name}.model" "${out}/${name}.model"
  echo "wrote ${out}/${name}.model"
}

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
cp "${corpus}" "${tmp}/corpus.txt"

# Small vocabulary, lower character coverage: many characters fall back to bytes.
train gemma_bpe_700 "${gemma_flags[@]}" --vocab_size=700 --character_coverage=0.98
# Larger vocabulary, full coverage.
train gemma_bpe_1500 "${gemma_flags[@]}" --vocab_size=1500 --character_coverage=1.0
# spm's defaults for the normalizer: nmt_nfkc charsmap, dummy prefix, extra whitespace removal.
train spm_defaults_bpe_1000 --vocab_size=1000 --character_coverage=0.9995
