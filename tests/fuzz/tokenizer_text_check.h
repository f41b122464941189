// Checks shared by the tokenizer harnesses: what Tokenizer and IncrementalDetokenizer promise for
// any loaded model (engine/tokenizer/tokenizer.h, detokenizer.h), stated as VG_FUZZ_CHECKs.
#ifndef VG_TESTS_FUZZ_TOKENIZER_TEXT_CHECK_H_
#define VG_TESTS_FUZZ_TOKENIZER_TEXT_CHECK_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_check.h"

namespace vg::fuzz {

inline bool IsWellFormedUtf8(std::string_view text) {
  while (!text.empty()) {
    const size_t n = engine::utf8::ValidCharLen(text);
    if (n == 0) return false;
    text.remove_prefix(n);
  }
  return true;
}

// Decode(ids) for ids inside the vocabulary: succeeds, is valid UTF-8, and equals what the
// incremental detokenizer streams for the same ids. Returns the decoded text.
inline std::string CheckDecode(const engine::Tokenizer& tokenizer, std::span<const int32_t> ids) {
  absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
  VG_FUZZ_CHECK(decoded.ok(), decoded.status().ToString());
  VG_FUZZ_CHECK(IsWellFormedUtf8(*decoded), "Decode returned malformed UTF-8");
  engine::IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = detokenizer.Push(id);
    VG_FUZZ_CHECK(IsWellFormedUtf8(piece), "IncrementalDetokenizer::Push split a character");
    streamed += piece;
  }
  streamed += detokenizer.Finish();
  VG_FUZZ_CHECK(streamed == *decoded,
                absl::StrCat("streamed text '", streamed, "' != Decode '", *decoded, "'"));
  return *decoded;
}

// Encode(text) yields ids inside the vocabulary (BOS first when asked) that decode cleanly.
inline std::vector<int32_t> CheckEncode(const engine::Tokenizer& tokenizer, std::string_view text,
                                        bool add_bos) {
  std::vector<int32_t> ids = tokenizer.Encode(text, add_bos);
  for (int32_t id : ids) {
    VG_FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size(), absl::StrCat("Encode gave id ", id));
  }
  if (add_bos && tokenizer.bos_id() >= 0) {
    VG_FUZZ_CHECK(!ids.empty() && ids[0] == tokenizer.bos_id(), "no BOS");
  }
  CheckDecode(tokenizer, ids);
  return ids;
}

}  // namespace vg::fuzz

#endif  // VG_TESTS_FUZZ_TOKENIZER_TEXT_CHECK_H_
