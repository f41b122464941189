#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/newline_goldens.json: encodings of texts containing '\n'.

spm_encode reads its input line by line, so newline runs (user-defined pieces in Gemma) cannot be
tested through it. This script uses the PyPI `sentencepiece` package (same C++ core) once, at
fixture-generation time; the tests read the JSON and need no Python. Rerun after retraining:

    python3 tools/tokenizers/make_newline_goldens.py
"""
import json
import pathlib

import sentencepiece

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "tokenizers"
MODELS = ["gemma_bpe_700", "gemma_bpe_1500", "spm_defaults_bpe_1000"]
TEXTS = [
    "\n",
    "\n\n",
    "a\nb",
    "line one\nline two\n",
    "para\n\n\nnext para",
    "\n" * 8,
    "\n" * 9,
    "\n" * 20 + "x",
    "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n",
    "code:\n\tif x:\n\t\treturn 1\n",
    "  \n  \n",
    " \n",
    "\r\n\r\n",
    "text ending in newline\n",
    "\n leading newline then space",
    "日本語\n\n中文\n",
    "emoji\n🎉\n",
]


def main():
    cases = []
    for name in MODELS:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(FIXTURES / f"{name}.model"))
        for text in TEXTS:
            ids = sp.encode(text)
            cases.append({"model": name, "text": text, "ids": ids, "decoded": sp.decode(ids)})
    out = FIXTURES / "newline_goldens.json"
    out.write_text(json.dumps({"generator": "tools/tokenizers/make_newline_goldens.py",
                               "sentencepiece": sentencepiece.__version__,
                               "cases": cases}, ensure_ascii=False, indent=1) + "\n",
                   encoding="utf-8")
    print(f"wrote {out} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
