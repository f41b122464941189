#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses into tests/fuzz/corpus/<harness>/.

Seeds are a few valid inputs derived from the committed fixtures (tests/fixtures) plus edge cases
that each exercise one rule of the parser. Run from anywhere; it rewrites only the files it names
(`seed-*`), so crash reproducers committed next to them (`crash-*`, `regress-*`) stay. Needs only
the Python standard library, `protoc` (GenerateRequest seeds, via --encode) and `spm_train` (one
tokenizer with a precompiled character map); both come with `make deps`.

    tests/fuzz/make_corpus.py
"""

import json
import os
import pathlib
import shutil
import struct
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def write(harness, name, data):
    directory = CORPUS / harness
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    (directory / f"seed-{name}").write_bytes(data)


def clear_seeds(harness):
    directory = CORPUS / harness
    if directory.is_dir():
        for path in directory.glob("seed-*"):
            path.unlink()


# --- safetensors ---------------------------------------------------------------------------------


def safetensors(header, data=b"", pad_to=8):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad_to:
        text += b" " * (-len(text) % pad_to)  # the reference writer pads with spaces
    return struct.pack("<Q", len(text)) + text + data


def small_from_fixture(path, max_tensor_bytes=1280, max_tensors=6):
    """A valid file with the fixture's smallest tensors (real names, dtypes, shapes and bytes)."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    data_start = 8 + length
    tensors = [(k, v) for k, v in header.items() if k != "__metadata__"]
    tensors.sort(key=lambda kv: kv[1]["data_offsets"][0])
    out_header, out_data = {}, b""
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    for name, entry in tensors:
        begin, end = entry["data_offsets"]
        if end - begin > max_tensor_bytes or len(out_header) > max_tensors:
            continue
        out_header[name] = {
            "dtype": entry["dtype"],
            "shape": entry["shape"],
            "data_offsets": [len(out_data), len(out_data) + end - begin],
        }
        out_data += blob[data_start + begin : data_start + end]
    return safetensors(out_header, out_data)


def make_safetensors():
    h = "safetensors_fuzzer"
    clear_seeds(h)
    for fixture in ["f32_mha_tied_sliding", "bf16_mqa_bias_caps", "f16_oldrope_mixedcaps"]:
        write(h, f"fixture-{fixture}", small_from_fixture(FIXTURES / fixture / "model.safetensors"))
    shard = FIXTURES / "bf16_gqa_sharded_eoslist" / "model-00003-of-00006.safetensors"
    write(h, "fixture-shard", small_from_fixture(shard, max_tensor_bytes=2048))
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    write(h, "empty-header", safetensors({}))
    write(h, "metadata-only", safetensors({"__metadata__": {"format": "pt"}}))
    write(h, "unpadded", safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                     f32, pad_to=0))
    write(h, "scalar-and-empty", safetensors({
        "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        "e": {"dtype": "BF16", "shape": [0, 7], "data_offsets": [4, 4]},
        "h": {"dtype": "F16", "shape": [2, 1, 3], "data_offsets": [4, 16]},
    }, f32))
    write(h, "trailing-data", safetensors(
        {"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, f32))
    # Each of these breaks one rule.
    write(h, "overlap", safetensors({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }, f32))
    write(h, "offsets-past-end", safetensors(
        {"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, f32))
    write(h, "size-mismatch", safetensors(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, f32))
    write(h, "shape-overflow", safetensors(
        {"a": {"dtype": "F32", "shape": [4611686018427387904, 4, 0, 3], "data_offsets": [0, 0]},
         "b": {"dtype": "F16", "shape": [9223372036854775807, 3], "data_offsets": [0, 16]}}, f32))
    write(h, "negative-dims", safetensors(
        {"a": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}, f32))
    write(h, "unsupported-dtype", safetensors(
        {"a": {"dtype": "I8", "shape": [16], "data_offsets": [0, 16]}}, f32))
    write(h, "bad-metadata", safetensors({"__metadata__": {"format": 1}}))
    write(h, "header-length-huge", struct.pack("<Q", 2**64 - 1) + b"{}")
    write(h, "header-length-past-end", struct.pack("<Q", 64) + b"{}")
    write(h, "too-short", b"\x02\x00\x00\x00\x00\x00\x00")
    write(h, "nul-in-header", struct.pack("<Q", 7) + b'{"a":\x00}')
    write(h, "not-an-object", safetensors([1, 2, 3]))


# --- config.json ---------------------------------------------------------------------------------


def make_config():
    h = "model_config_fuzzer"
    clear_seeds(h)
    seen = set()
    for path in sorted(FIXTURES.glob("*/config.json")):
        text = path.read_bytes()
        if text not in seen:
            seen.add(text)
            write(h, f"fixture-{path.parent.name}.json", text)
    base = json.loads((FIXTURES / "f32_config_defaults" / "config.json").read_text())
    write(h, "minimal.json", '{"model_type":"vaultgemma"}')
    write(h, "null-caps-eos-list.json", json.dumps(dict(
        base, attn_logit_softcapping=None, final_logit_softcapping=None, eos_token_id=[1, 2],
        pad_token_id=None)))
    write(h, "rope-parameters.json", json.dumps(dict(
        base, rope_parameters={"rope_type": "default", "rope_theta": base.get("rope_theta", 1e4)})))
    write(h, "rope-scaling-linear.json", json.dumps(dict(
        base, rope_scaling={"type": "linear", "factor": 2.0})))
    write(h, "layer-types.json", json.dumps(dict(
        base, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])))
    write(h, "float-for-int.json", '{"model_type":"vaultgemma","vocab_size":512.0}')
    write(h, "huge-ints.json",
          '{"model_type":"vaultgemma","vocab_size":18446744073709551615,'
          '"hidden_size":-9223372036854775808,"head_dim":9223372036854775808}')
    write(h, "float-overflow.json", '{"model_type":"vaultgemma","rms_norm_eps":1e400}')
    write(h, "heads-not-divisible.json",
          '{"model_type":"vaultgemma","num_attention_heads":8,"num_key_value_heads":3}')
    write(h, "not-an-object.json", "[1, 2, 3]")
    write(h, "deep-nesting.json", '{"model_type":"vaultgemma","x":' + "[" * 2000 + "]" * 2000 + "}")
    write(h, "escapes.json", '{"model_type":"vault\\u0067emma","torch_dtype":"torch.bfloat16"}')


# --- tokenizer.model -----------------------------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_float(number, value):
    return varint(number << 3 | 5) + struct.pack("<f", value)


NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def piece(text, score=0.0, kind=NORMAL):
    body = field_bytes(1, text) + field_float(2, score)
    if kind != NORMAL:
        body += field_varint(3, kind)
    return field_bytes(1, body)


def model_proto(pieces, trainer, normalizer, samples=()):
    out = b"".join(pieces) + field_bytes(2, trainer) + field_bytes(3, normalizer)
    if samples:
        out += field_bytes(4, b"".join(
            field_bytes(1, field_bytes(1, i) + field_bytes(2, e)) for i, e in samples))
    return out


def make_tokenizer_models():
    h = "tokenizer_model_fuzzer"
    clear_seeds(h)
    for name, path in [("fixture-384", FIXTURES / "f32_mha_tied_sliding" / "tokenizer.model"),
                       ("fixture-512", FIXTURES / "f32_config_defaults" / "tokenizer.model"),
                       ("gemma-bpe-700", FIXTURES / "tokenizers" / "gemma_bpe_700.model")]:
        write(h, name, path.read_bytes())
    ws = "\u2581"
    # Gemma's layout: pad, eos, bos, unk, 256 byte pieces, then merges; a self-test sample.
    pieces = [piece("<pad>", 0, CONTROL), piece("<eos>", 0, CONTROL), piece("<bos>", 0, CONTROL),
              piece("<unk>", 0, UNKNOWN)]
    pieces += [piece(f"<0x{b:02X}>", 0, BYTE) for b in range(256)]
    pieces += [piece("<start_of_turn>", 0, USER_DEFINED), piece(ws, -1), piece("a", -2),
               piece("b", -3), piece("ab", -4), piece(ws + "ab", -5), piece("<unused0>", 0, UNUSED)]
    trainer = (field_varint(3, 2) + field_varint(4, len(pieces)) + field_varint(35, 1) +
               field_varint(40, 3) + field_varint(41, 2) + field_varint(42, 1) + field_varint(43, 0))
    identity = field_bytes(1, "identity") + field_varint(3, 0) + field_varint(4, 0)
    write(h, "byte-fallback-minimal",
          model_proto(pieces, trainer, identity, [("ab ab", "ab " + ws + "ab")]))
    # spm's defaults: unk 0, bos 1, eos 2, no pad; dummy prefix and whitespace removal on.
    pieces = [piece("<unk>", 0, UNKNOWN), piece("<s>", 0, CONTROL), piece("</s>", 0, CONTROL),
              piece(ws, -1), piece("x", -2), piece("y", -3), piece(ws + "x", -4)]
    trainer = field_varint(3, 2) + field_varint(4, len(pieces))
    write(h, "defaults-minimal", model_proto(pieces, trainer, b""))
    # Unknown fields, a group and a repeated singular message must be skipped or merged.
    extra = varint(99 << 3) + varint(7) + varint(100 << 3 | 3) + field_varint(1, 5) + \
        varint(100 << 3 | 4) + field_bytes(3, field_varint(3, 0))
    write(h, "unknown-fields", model_proto(pieces, trainer, b"") + extra)
    write(h, "truncated", (FIXTURES / "tokenizers" / "gemma_bpe_700.model").read_bytes()[:777])
    write(h, "two-unknowns", model_proto(pieces + [piece("<unk2>", 0, UNKNOWN)], trainer, b""))
    write(h, "unigram", model_proto(pieces, field_varint(3, 1), b""))
    write(h, "empty", b"")
    # A precompiled character map (a Darts double array), as spm_train writes for custom rules.
    spm_train = shutil.which("spm_train")
    if spm_train is None:
        print("spm_train not found (make deps): seed-charsmap not written")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "corpus.txt").write_text(
            "\n".join((ROOT / "tools" / "tokenizers" / "corpus.txt").read_text().splitlines()[:40]))
        # Code points: full-width digits and a ligature to ASCII, A to a.
        (tmp / "rules.tsv").write_text("FF11\t31\nFF12\t32\nFB01\t66 69\n41\t61\n")
        subprocess.run([spm_train, "--input=corpus.txt", "--model_prefix=charsmap",
                        "--model_type=bpe", "--vocab_size=600", "--num_threads=1",
                        "--random_seed=1", "--byte_fallback=true", "--minloglevel=2",
                        "--normalization_rule_tsv=rules.tsv"],
                       cwd=tmp, check=True, capture_output=True)
        write(h, "charsmap", (tmp / "charsmap.model").read_bytes())


# --- tokenizer text ------------------------------------------------------------------------------


def make_tokenizer_text():
    h = "tokenizer_text_fuzzer"
    clear_seeds(h)
    lines = (ROOT / "tools" / "tokenizers" / "corpus.txt").read_text().splitlines()
    texts = {
        "corpus": lines[0],
        "digits": "She carried 3 baskets of apples, 12 pears and 127 plums.",
        "multilingual": "caf\u00e9 \u65e5\u672c\u8a9e \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439 \U0001F642\U0001F44D",
        "whitespace": "  two  spaces\n\n\ttab\t\t  \n",
        "user-symbols": "<start_of_turn>user\nHi<end_of_turn>\n<b>bold</b><br>",
        "ws-symbol": "a\u2581b \u2581\u2581c",
        "stops": "The train leaves at 07:45 and arrives at 19:30.\n at\n19:\nleaves",
        "stop-emoji": "x\U0001F642y\U0001F642z\n\U0001F642\ny",
    }
    for i, (name, text) in enumerate(texts.items()):
        # byte 0: bit 0 picks the model, bit 1 adds BOS.
        write(h, f"{name}-gemma", bytes([2 * (i % 2)]) + text.encode("utf-8"))
        write(h, f"{name}-defaults", bytes([1 + 2 * (i % 2)]) + text.encode("utf-8"))
    write(h, "invalid-utf8", b"\x00ab\xff\xc3(\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82")
    write(h, "ids", b"\x00" + struct.pack("<12H", 2, 100, 200, 7, 8, 0xF0 + 4, 0x9F + 4,
                                           0x98 + 4, 0x80 + 4, 700 + 4, 3, 1))
    write(h, "nul", b"\x02a\x00b\x00\x00")


# --- GenerateRequest -----------------------------------------------------------------------------


REQUESTS = {
    "text": 'text: "Hello I am doing a project"',
    "text-sampling": '''text: "caf\\303\\251 \\360\\237\\231\\202 sampling"
sampling { temperature: 0.8 top_k: 40 top_p: 0.95 min_p: 0.05 repetition_penalty: 1.1
           presence_penalty: 0.5 frequency_penalty: -0.5 seed: 7 }
stopping { max_new_tokens: 32 stop: "\\n\\n" stop: "the" stop_token_ids: 1 ignore_eos: true }
top_logprobs: 5 request_id: "client-id-1" cache_salt: "tenant-a"''',
    "token-ids": "token_ids { ids: [2, 10, 20, 30] } stopping { max_new_tokens: 1000 }",
    "empty": "",
    "empty-text": 'text: ""',
    "bad-top-p": 'text: "x" sampling { top_p: 0 }',
    "nan-temperature": 'text: "x" sampling { temperature: nan }',
    "inf-penalty": 'text: "x" sampling { repetition_penalty: inf presence_penalty: -3 }',
    "id-out-of-vocab": "token_ids { ids: [2, 4294967295] }",
    "too-many-stops": 'text: "x" stopping { ' + " ".join(f'stop: "s{i}"' for i in range(17)) + " }",
    "long-stop": 'text: "x" stopping { stop: "' + "y" * 300 + '" }',
    "empty-stop": 'text: "x" stopping { stop: "" }',
    "prompt-too-long": "token_ids { ids: [" + ", ".join(["5"] * 200) + "] }",
    "zero-max-new-tokens": 'text: "x" stopping { max_new_tokens: 0 }',
    "top-logprobs-21": 'text: "x" top_logprobs: 21',
    "bad-request-id": 'text: "x" request_id: "tab\\there"',
    "long-cache-salt": 'text: "x" cache_salt: "' + "s" * 257 + '"',
}


def make_requests():
    h = "generate_request_fuzzer"
    clear_seeds(h)
    protoc = shutil.which("protoc")
    if protoc is None:
        print("protoc not found (make deps): GenerateRequest seeds not written")
        return
    proto_dir = ROOT / "proto"
    for name, text in REQUESTS.items():
        encoded = subprocess.run(
            [protoc, f"--proto_path={proto_dir}", "--encode=vaultgemma.v1.GenerateRequest",
             "vaultgemma/v1/text_generation.proto"],
            input=text.encode(), capture_output=True, check=True).stdout
        write(h, name, encoded)
    # Not a valid message (a truncated length-delimited field), and invalid UTF-8 in `text`.
    write(h, "truncated", b"\x0a\x10abc")
    write(h, "invalid-utf8-text", b"\x0a\x03a\xff(")


def main():
    make_safetensors()
    make_config()
    make_tokenizer_models()
    make_tokenizer_text()
    make_requests()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{CORPUS}: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    os.umask(0o022)
    main()
