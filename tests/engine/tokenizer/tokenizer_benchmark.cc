// Tokenizer throughput on a Gemma-sized vocabulary: a 256000-piece BPE ModelProto synthesized in
// memory (specials, Gemma-like user-defined symbols, 256 byte pieces, pieces made from frequent
// substrings of the benchmark text scored by frequency rank, then filler pieces), serialized and
// loaded through the real loader. Encodes ~400 KB of mixed text (English, accents, CJK, emoji,
// digits, code, whitespace runs, chat markup); reports bytes/s.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "benchmark/benchmark.h"
#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer/model_proto_writer.h"

namespace vg::engine {
namespace {

constexpr int kVocabSize = 256000;
constexpr char kWs[] = "\xE2\x96\x81";

std::string MixedText() {
  const std::vector<std::string> words = {"the",          "model",    "privacy",
                                          "token",        "server",   "inference",
                                          "of",           "and",      "a",
                                          "to",           "is",       "in",
                                          "differential", "training", "data",
                                          "with",         "café",     "élève",
                                          "naïve",        "Straße",   "über",
                                          "año",          "ção",      "Kraków",
                                          "日本語",       "東京",     "我们",
                                          "模型",         "한국어",   "Привет",
                                          "мир",          "مرحبا",    "🎉",
                                          "🤔",         "❤️",   "2025",
                                          "3.14159",      "1024",     "x = y + 1;",
                                          "def f(x):",    "return",   "{\"key\": 42}",
                                          "<b>",          "</b>",     "https://example.com/a?b=c"};
  std::mt19937 rng(2025);
  std::string text;
  while (text.size() < 400 * 1024) {
    std::string line;
    if (rng() % 10 == 0) line += "<start_of_turn>user\n";
    const int n = 5 + rng() % 20;
    for (int i = 0; i < n; ++i) {
      if (i > 0) line += rng() % 15 == 0 ? "    " : (rng() % 30 == 0 ? "\t" : " ");
      line += words[rng() % words.size()];
    }
    line += rng() % 8 == 0 ? "<end_of_turn>\n\n" : "\n";
    text += line;
  }
  return text;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    lines.push_back(text.substr(start, end - start));
    start = end;
  }
  return lines;
}

size_t CharLen(char lead) {
  const uint8_t b = static_cast<uint8_t>(lead);
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

std::string SynthesizeModel(const std::string& text) {
  SpmModelProto m;
  m.trainer_spec.model_type = SpmModelType::kBpe;
  m.trainer_spec.byte_fallback = true;
  m.trainer_spec.vocab_size = kVocabSize;
  m.trainer_spec.pad_id = 0;
  m.trainer_spec.eos_id = 1;
  m.trainer_spec.bos_id = 2;
  m.trainer_spec.unk_id = 3;
  m.trainer_spec.pad_piece = "<pad>";
  m.trainer_spec.eos_piece = "<eos>";
  m.trainer_spec.bos_piece = "<bos>";
  m.trainer_spec.unk_piece = "<unk>";
  m.normalizer_spec.name = "identity";
  m.normalizer_spec.add_dummy_prefix = false;
  m.normalizer_spec.remove_extra_whitespaces = false;
  m.pieces = {{"<pad>", 0, SpmPieceType::kControl},
              {"<eos>", 0, SpmPieceType::kControl},
              {"<bos>", 0, SpmPieceType::kControl},
              {"<unk>", 0, SpmPieceType::kUnknown}};
  absl::flat_hash_map<std::string, int> seen;
  const auto add = [&](const std::string& piece, float score, SpmPieceType type) {
    if (static_cast<int>(m.pieces.size()) < kVocabSize && seen.emplace(piece, 1).second) {
      m.pieces.push_back({piece, score, type});
    }
  };
  for (const char* s : {"<start_of_turn>", "<end_of_turn>", "<b>", "</b>", "<table>", "<td>"}) {
    add(s, 0, SpmPieceType::kUserDefined);
  }
  for (int n = 1; n <= 31; ++n) add(std::string(n, '\n'), 0, SpmPieceType::kUserDefined);
  std::string run = kWs;
  for (int n = 2; n <= 31; ++n) add(run += kWs, 0, SpmPieceType::kUserDefined);
  for (int n = 2; n <= 10; ++n) add(std::string(n, '\t'), 0, SpmPieceType::kUserDefined);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, 0, SpmPieceType::kByte);
  }
  // Substrings of 1..8 characters within ▁-delimited words of the escaped text, by frequency.
  std::string escaped;
  for (char c : text) c == ' ' ? escaped += kWs : escaped += c;
  absl::flat_hash_map<std::string, int> counts;
  std::vector<size_t> starts;
  for (size_t i = 0; i < escaped.size(); i += CharLen(escaped[i])) starts.push_back(i);
  starts.push_back(escaped.size());
  for (size_t s = 0; s + 1 < starts.size(); ++s) {
    for (size_t len = 1; len <= 8 && s + len < starts.size(); ++len) {
      const std::string sub = escaped.substr(starts[s], starts[s + len] - starts[s]);
      if (len > 1 && sub.find(kWs, 1) != std::string::npos) break;  // one word (plus its ▁)
      if (sub.find('\n') != std::string::npos) break;
      ++counts[sub];
    }
  }
  std::vector<std::pair<std::string, int>> ranked(counts.begin(), counts.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  float score = 0;
  for (const auto& [piece, count] : ranked) add(piece, score -= 1, SpmPieceType::kNormal);
  // Filler pieces up to the Gemma vocabulary size (never matched by the text).
  for (int i = 0; static_cast<int>(m.pieces.size()) < kVocabSize; ++i) {
    std::string filler = kWs;
    for (int v = i; v > 0 || filler.size() == 3; v /= 26) filler += static_cast<char>('A' + v % 26);
    add(filler + "Q", score -= 1, SpmPieceType::kNormal);
  }
  return testing::SerializeModelProto(m);
}

struct Fixture {
  std::string text = MixedText();
  std::vector<std::string> lines = Lines(text);
  std::string model = SynthesizeModel(text);
  std::unique_ptr<Tokenizer> tokenizer = *Tokenizer::FromSerializedProto(model);
};

const Fixture& GetFixture() {
  static const Fixture* fixture = new Fixture();
  return *fixture;
}

void BM_EncodeLines(benchmark::State& state) {
  const Fixture& f = GetFixture();
  size_t tokens = 0;
  for (auto _ : state) {
    for (const std::string& line : f.lines) {
      std::vector<int32_t> ids = f.tokenizer->Encode(line, /*add_bos=*/false);
      tokens += ids.size();
      benchmark::DoNotOptimize(ids);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.text.size()));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["bytes/token"] =
      static_cast<double>(state.iterations() * f.text.size()) / static_cast<double>(tokens);
}
BENCHMARK(BM_EncodeLines)->Unit(benchmark::kMillisecond);

void BM_EncodeWholeText(benchmark::State& state) {
  const Fixture& f = GetFixture();
  for (auto _ : state) benchmark::DoNotOptimize(f.tokenizer->Encode(f.text, /*add_bos=*/true));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.text.size()));
}
BENCHMARK(BM_EncodeWholeText)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Fixture& f = GetFixture();
  const std::vector<int32_t> ids = f.tokenizer->Encode(f.text, false);
  for (auto _ : state) benchmark::DoNotOptimize(f.tokenizer->Decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.text.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

void BM_Load256kVocab(benchmark::State& state) {
  const Fixture& f = GetFixture();
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::FromSerializedProto(f.model));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.model.size()));
}
BENCHMARK(BM_Load256kVocab)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace vg::engine

BENCHMARK_MAIN();
