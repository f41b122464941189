// Fuzzes the tokenizer on arbitrary text and arbitrary ids with the committed test models
// (tests/fixtures/tokenizers): Encode, Decode, the incremental detokenizer and the stop-string
// matcher, i.e. what a client's prompt, stop strings and the model's output go through.
//
// Input: byte 0 picks the model (bit 0: gemma_bpe_700, Gemma's flags with identity normalization;
// or spm_defaults_bpe_1000, spm's defaults with the nmt_nfkc character map) and add_bos (bit 1).
// The remaining bytes are used three ways:
//   - as text: Encode gives in-vocabulary ids whose Decode equals the streamed detokenization, and
//     with the identity-normalized model Decode(Encode(text)) == text for valid UTF-8 without
//     U+2581 (the only character that does not survive: it decodes to a space);
//   - as little-endian uint16 ids (mapped onto [-4, vocab + 4)): Decode is OUT_OF_RANGE exactly
//     when one is outside the vocabulary, else it agrees with the streamed text;
//   - the lines after the first as up to 4 stop strings: StopStringMatcher over the streamed text
//     yields exactly the text cut at the earliest occurrence of any stop.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/tokenizer_text_check.h"

namespace {

using vg::engine::Tokenizer;

const Tokenizer& Model(int index) {
  static const std::unique_ptr<Tokenizer>* models = [] {
    auto* loaded = new std::unique_ptr<Tokenizer>[2];
    const std::string dir = std::string(VG_SOURCE_DIR) + "/tests/fixtures/tokenizers/";
    const char* names[2] = {"gemma_bpe_700.model", "spm_defaults_bpe_1000.model"};
    for (int i = 0; i < 2; ++i) {
      auto tokenizer = Tokenizer::Load(dir + names[i]);
      if (!tokenizer.ok()) {
        std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
        std::abort();
      }
      loaded[i] = *std::move(tokenizer);
    }
    return loaded;
  }();
  return *models[index];
}

void CheckIds(const Tokenizer& tokenizer, std::string_view bytes) {
  const int32_t vocab = tokenizer.vocab_size();
  std::vector<int32_t> ids;
  std::vector<int32_t> in_vocab;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const uint32_t raw = static_cast<uint8_t>(bytes[i]) | static_cast<uint8_t>(bytes[i + 1]) << 8;
    const int32_t id = static_cast<int32_t>(raw % static_cast<uint32_t>(vocab + 8)) - 4;
    ids.push_back(id);
    if (id >= 0 && id < vocab) in_vocab.push_back(id);
  }
  if (in_vocab.size() == ids.size()) {
    vg::fuzz::CheckDecode(tokenizer, ids);
    return;
  }
  absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
  VG_FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kOutOfRange,
                absl::StrCat("Decode with an id out of range: ", decoded.status().ToString()));
  // The detokenizer skips ids Decode rejects.
  const std::string expected = vg::fuzz::CheckDecode(tokenizer, in_vocab);
  vg::engine::IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (int32_t id : ids) streamed += detokenizer.Push(id);
  streamed += detokenizer.Finish();
  VG_FUZZ_CHECK(streamed == expected, "an out-of-range id changed the streamed text");
}

void CheckStops(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                std::string_view bytes) {
  std::vector<std::string> stops;
  bool stops_valid = true;
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    const size_t end = bytes.find('\n', start);
    lines.push_back(bytes.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  for (size_t i = 1; i < lines.size() && stops.size() < 4; ++i) {
    if (lines[i].empty() || lines[i].size() > 32) continue;
    stops.emplace_back(lines[i]);
    stops_valid = stops_valid && vg::fuzz::IsWellFormedUtf8(lines[i]);
  }
  if (stops.empty()) return;
  vg::engine::IncrementalDetokenizer detokenizer(tokenizer);
  vg::engine::StopStringMatcher matcher(stops);
  std::string full;
  std::string emitted;
  bool stopped = false;
  auto feed = [&](const std::string& piece) {
    full += piece;
    vg::engine::StopStringMatcher::Result result = matcher.Push(piece);
    VG_FUZZ_CHECK(!stopped || (result.stopped && result.text.empty()), "text after the stop");
    if (stops_valid) {
      VG_FUZZ_CHECK(vg::fuzz::IsWellFormedUtf8(result.text), "the matcher split a character");
    }
    emitted += result.text;
    stopped = stopped || result.stopped;
  };
  for (int32_t id : ids) feed(detokenizer.Push(id));
  feed(detokenizer.Finish());
  const std::string flushed = matcher.Flush();
  VG_FUZZ_CHECK(!stopped || flushed.empty(), "Flush after a stop");
  emitted += flushed;
  size_t cut = full.size();
  for (const std::string& stop : stops) cut = std::min(cut, full.find(stop));
  VG_FUZZ_CHECK(matcher.stopped() == (cut != full.size()), "stopped() disagrees with the text");
  VG_FUZZ_CHECK(emitted == full.substr(0, cut),
                absl::StrCat("emitted '", emitted, "', expected '", full.substr(0, cut), "'"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int model = data[0] & 1;
  const bool add_bos = (data[0] & 2) != 0;
  const Tokenizer& tokenizer = Model(model);
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  const std::vector<int32_t> ids = vg::fuzz::CheckEncode(tokenizer, text, add_bos);
  if (model == 0 && vg::fuzz::IsWellFormedUtf8(text) &&
      text.find(vg::engine::utf8::kSpaceSymbol) == std::string_view::npos) {
    absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
    VG_FUZZ_CHECK(decoded.ok() && *decoded == text,
                  "round trip of '" + std::string(text) + "' gave '" + decoded.value_or("?") + "'");
  }
  CheckIds(tokenizer, text);
  CheckStops(tokenizer, ids, text);
  return 0;
}
