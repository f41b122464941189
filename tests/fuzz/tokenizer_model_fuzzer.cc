// Fuzzes Tokenizer::FromSerializedProto (engine/tokenizer/): a tokenizer.model as a checkpoint
// supplies it, through our own protobuf wire reader, the ModelProto parser, SentencePiece's
// load-time validation (including the self-test samples a model may carry, which run the encoder)
// and the normalizer's precompiled character map.
//
// A rejected model must be INVALID_ARGUMENT. An accepted one must behave on every call the server
// makes: special ids inside the vocabulary, PieceToId inverse to IdToPiece, and Encode / Decode /
// the incremental detokenizer consistent on a few fixed texts (tokenizer_text_check.h).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/tokenizer_text_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto loaded = vg::engine::Tokenizer::FromSerializedProto(bytes);
  if (!loaded.ok()) {
    VG_FUZZ_CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument,
                  loaded.status().ToString());
    return 0;
  }
  const vg::engine::Tokenizer& tokenizer = **loaded;
  const int32_t vocab = tokenizer.vocab_size();
  VG_FUZZ_CHECK(vocab > 0, "empty vocabulary");
  VG_FUZZ_CHECK(tokenizer.unk_id() >= 0 && tokenizer.unk_id() < vocab, "unk_id");
  for (int32_t id : {tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()}) {
    VG_FUZZ_CHECK(id >= -1 && id < vocab, absl::StrCat("special id ", id));
  }
  // Lookups find a piece with the same string. Not always `id` itself: like spm, a control,
  // unknown or byte piece may share its string with a normal one, and PieceToId prefers it.
  const int32_t checked = std::min<int32_t>(vocab, 512);
  std::vector<int32_t> all_ids;
  for (int32_t id = 0; id < checked; ++id) {
    const std::string_view piece = tokenizer.IdToPiece(id);
    VG_FUZZ_CHECK(!piece.empty(), absl::StrCat("empty piece ", id));
    const int32_t found = tokenizer.PieceToId(piece);
    VG_FUZZ_CHECK(found >= 0 && found < vocab && tokenizer.IdToPiece(found) == piece,
                  absl::StrCat("PieceToId of piece ", id, " gave ", found));
    all_ids.push_back(id);
  }
  VG_FUZZ_CHECK(tokenizer.IdToPiece(vocab).empty() && tokenizer.IdToPiece(-1).empty(),
                "IdToPiece out of range");
  const int32_t out_of_range[] = {vocab};
  VG_FUZZ_CHECK(tokenizer.Decode(out_of_range).status().code() == absl::StatusCode::kOutOfRange,
                "Decode of an id past the vocabulary");
  vg::fuzz::CheckDecode(tokenizer, all_ids);
  for (std::string_view text :
       {std::string_view("Hello world, 12345!"), std::string_view("  two  spaces\n\ttab  "),
        std::string_view("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82"),
        std::string_view("bad \xFF\xC3( bytes\xE2\x96\x81"), std::string_view("\0x", 2),
        std::string_view("")}) {
    vg::fuzz::CheckEncode(tokenizer, text, /*add_bos=*/true);
  }
  return 0;
}
