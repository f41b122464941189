// Tests of IncrementalDetokenizer and StopStringMatcher against plain references: the streamed
// text must concatenate to Tokenizer::Decode of the same ids (for every prefix, on the committed
// fixture models and on hand-built models with the leading-space rules), and the stop matcher must
// agree with a search over the whole text while holding back no more than it has to.
#include "engine/tokenizer/detokenizer.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/model_proto.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/model_proto_writer.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFffd = "\xEF\xBF\xBD";
constexpr char kWs[] = "\xE2\x96\x81";  // ▁

// ---------------------------------------------------------------------------------------------
// An independent UTF-8 reference (RFC 3629 table 3-7), not engine/tokenizer/utf8.h.

std::string EncodeCodePoint(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

bool IsWellFormedUtf8(std::string_view s) {
  size_t i = 0;
  const auto at = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const auto in = [](uint8_t v, uint8_t lo, uint8_t hi) { return v >= lo && v <= hi; };
  while (i < s.size()) {
    const uint8_t b0 = at(i);
    size_t n = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (b0 <= 0x7F) {
      n = 1;
    } else if (in(b0, 0xC2, 0xDF)) {
      n = 2;
    } else if (b0 == 0xE0) {
      n = 3, lo = 0xA0;
    } else if (in(b0, 0xE1, 0xEC) || in(b0, 0xEE, 0xEF)) {
      n = 3;
    } else if (b0 == 0xED) {
      n = 3, hi = 0x9F;
    } else if (b0 == 0xF0) {
      n = 4, lo = 0x90;
    } else if (in(b0, 0xF1, 0xF3)) {
      n = 4;
    } else if (b0 == 0xF4) {
      n = 4, hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    if (n > 1 && !in(at(i + 1), lo, hi)) return false;
    for (size_t k = 2; k < n; ++k) {
      if (!in(at(i + k), 0x80, 0xBF)) return false;
    }
    i += n;
  }
  return true;
}

// Every proper, non-empty prefix of a well-formed character of 2-4 bytes.
const std::set<std::string>& ProperPrefixesOfCharacters() {
  static const std::set<std::string>* const prefixes = [] {
    auto* set = new std::set<std::string>();
    for (uint32_t cp = 0x80; cp <= 0x10FFFF; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      const std::string c = EncodeCodePoint(cp);
      for (size_t n = 1; n < c.size(); ++n) set->insert(c.substr(0, n));
    }
    return set;
  }();
  return *prefixes;
}

// ---------------------------------------------------------------------------------------------
// IncrementalDetokenizer

struct LoadedModel {
  std::string name;
  std::unique_ptr<Tokenizer> tokenizer;
};

std::vector<LoadedModel> FixtureModels() {
  std::vector<fs::path> paths;
  const fs::path root = fs::path(VG_SOURCE_DIR) / "tests/fixtures";
  for (const auto& entry : fs::directory_iterator(root / "tokenizers")) {
    if (entry.path().extension() == ".model") paths.push_back(entry.path());
  }
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && fs::exists(entry.path() / "tokenizer.model")) {
      paths.push_back(entry.path() / "tokenizer.model");
    }
  }
  std::sort(paths.begin(), paths.end());
  std::vector<LoadedModel> models;
  for (const fs::path& path : paths) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(path);
    EXPECT_TRUE(tok.ok()) << tok.status();
    if (tok.ok()) models.push_back({path.lexically_relative(root).string(), *std::move(tok)});
  }
  return models;
}

// <pad> <eos> <bos> <unk>, then `extra` pieces, then (with byte fallback) the 256 byte pieces.
SpmModelProto HandBuilt(const std::vector<SpmPiece>& extra, bool add_dummy_prefix,
                        bool remove_extra_whitespaces, bool byte_fallback = true) {
  SpmModelProto m;
  m.pieces = {{"<pad>", 0, SpmPieceType::kControl},
              {"<eos>", 0, SpmPieceType::kControl},
              {"<bos>", 0, SpmPieceType::kControl},
              {"<unk>", 0, SpmPieceType::kUnknown}};
  m.pieces.insert(m.pieces.end(), extra.begin(), extra.end());
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      m.pieces.push_back({name, 0, SpmPieceType::kByte});
    }
  }
  m.trainer_spec.model_type = SpmModelType::kBpe;
  m.trainer_spec.byte_fallback = byte_fallback;
  m.trainer_spec.pad_id = 0;
  m.trainer_spec.eos_id = 1;
  m.trainer_spec.bos_id = 2;
  m.trainer_spec.unk_id = 3;
  m.trainer_spec.pad_piece = "<pad>";
  m.trainer_spec.eos_piece = "<eos>";
  m.trainer_spec.bos_piece = "<bos>";
  m.trainer_spec.unk_piece = "<unk>";
  m.normalizer_spec.name = "identity";
  m.normalizer_spec.add_dummy_prefix = add_dummy_prefix;
  m.normalizer_spec.remove_extra_whitespaces = remove_extra_whitespaces;
  return m;
}

std::unique_ptr<Tokenizer> MustLoad(const SpmModelProto& m) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::FromSerializedProto(testing::SerializeModelProto(m));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// Hand-built models covering every leading-space rule, a lone "▁" piece, user-defined pieces,
// piece strings shared between a user-defined and a byte / control piece, and an unk surface.
std::vector<LoadedModel> HandBuiltModels() {
  const std::vector<SpmPiece> extra = {
      {kWs, -1, SpmPieceType::kNormal},
      {std::string(kWs) + kWs, -2, SpmPieceType::kNormal},
      {std::string(kWs) + "a", -3, SpmPieceType::kNormal},
      {"a", -4, SpmPieceType::kNormal},
      {"b", -5, SpmPieceType::kNormal},
      {"ab", -6, SpmPieceType::kNormal},
      {std::string("b") + kWs, -7, SpmPieceType::kNormal},
      {"\xC3\xA9", -8, SpmPieceType::kNormal},  // é
      {"<start_of_turn>", 0, SpmPieceType::kUserDefined},
      {std::string(kWs) + "<x>", 0, SpmPieceType::kUserDefined},
      {"<0x41>", 0, SpmPieceType::kUserDefined},  // shadowed by the byte piece <0x41>
      {"<eos>", 0, SpmPieceType::kUserDefined},   // shadowed by the control piece <eos>
      {"zz", 0, SpmPieceType::kUnused},
  };
  std::vector<LoadedModel> models;
  for (const bool dummy : {false, true}) {
    for (const bool extra_ws : {false, true}) {
      models.push_back(
          {"hand dummy=" + std::to_string(dummy) + " extra_ws=" + std::to_string(extra_ws),
           MustLoad(HandBuilt(extra, dummy, extra_ws))});
    }
  }
  SpmModelProto custom_unk = HandBuilt(extra, true, false);
  custom_unk.trainer_spec.unk_surface = "";
  models.push_back({"hand empty unk surface", MustLoad(custom_unk)});
  custom_unk.trainer_spec.unk_surface = "\xE2\x96\x81?";  // not unescaped, never stripped
  models.push_back({"hand custom unk surface", MustLoad(custom_unk)});
  // Without byte fallback "<0x41>" is an ordinary user-defined piece and decodes literally.
  std::vector<SpmPiece> no_bytes = extra;
  no_bytes.push_back({"<0xF0>", 0, SpmPieceType::kUserDefined});
  models.push_back({"hand no byte fallback", MustLoad(HandBuilt(no_bytes, true, true, false))});
  return models;
}

// Streams `ids` and checks, after every id: the chunk is well-formed UTF-8; what is held back is
// only the bytes of one unfinished character (which Finish turns into one U+FFFD each); and, if
// `check_every_prefix`, what was emitted plus a Finish() on a copy equals Decode(the ids so far).
// At the end, everything equals Decode(ids). `byte_of` gives the byte of each byte piece id and
// -1 for other ids.
void ExpectStreamsLikeDecode(const Tokenizer& tok, const std::vector<int>& byte_of,
                             const std::vector<int32_t>& ids, bool check_every_prefix,
                             const std::string& what) {
  IncrementalDetokenizer detok(tok);
  std::string emitted;
  std::string byte_run;  // byte values of the byte pieces at the end of the ids so far
  for (size_t n = 0; n < ids.size(); ++n) {
    const std::string chunk = detok.Push(ids[n]);
    ASSERT_TRUE(IsWellFormedUtf8(chunk)) << what << " at " << n;
    emitted += chunk;
    const int byte = byte_of[tok.PieceToId(tok.IdToPiece(ids[n]))];
    if (byte >= 0) {
      byte_run.push_back(static_cast<char>(byte));
    } else {
      byte_run.clear();
    }
    IncrementalDetokenizer copy = detok;
    const std::string tail = copy.Finish();
    if (check_every_prefix) {
      const absl::StatusOr<std::string> want =
          tok.Decode(std::span<const int32_t>(ids.data(), n + 1));
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_EQ(emitted + tail, *want) << what << " prefix length " << n + 1;
    }
    ASSERT_EQ(tail.size() % kFffd.size(), 0u) << what;
    const size_t held = tail.size() / kFffd.size();
    for (size_t k = 0; k < held; ++k) {
      ASSERT_EQ(tail.substr(k * kFffd.size(), kFffd.size()), kFffd) << what;
    }
    if (held > 0) {
      ASSERT_LE(held, byte_run.size()) << what;
      ASSERT_TRUE(ProperPrefixesOfCharacters().count(byte_run.substr(byte_run.size() - held)))
          << what << " holds bytes that can no longer form a character, at " << n;
    }
  }
  const std::string tail = detok.Finish();
  const absl::StatusOr<std::string> want = tok.Decode(ids);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(emitted + tail, *want) << what;
  EXPECT_EQ(detok.Finish(), "");
}

// Byte value of each canonical byte piece id, -1 elsewhere.
std::vector<int> ByteTable(const Tokenizer& tok) {
  std::vector<int> byte_of(tok.vocab_size(), -1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const int32_t id = tok.PieceToId(name);
    if (tok.IdToPiece(id) == name && tok.PieceBytes(id) == std::string(1, static_cast<char>(b))) {
      byte_of[id] = b;
    }
  }
  return byte_of;
}

std::string RandomText(std::mt19937& rng) {
  static const std::vector<std::string> kAtoms = {"a",           "b",
                                                  "ab",          " ",
                                                  "  ",          "\n",
                                                  "the",         " hello",
                                                  "é",           "ü",
                                                  "ß",           "ñ",
                                                  "日本",        "語",
                                                  "中文",        "한국어",
                                                  "Ж",           "ω",
                                                  "→",           "€",
                                                  "😀",           "👍🏽",
                                                  "🇩🇪",          "𝄞",
                                                  "\t",          "<start_of_turn>",
                                                  "<0x41>",      "zz",
                                                  "\xEF\xBF\xBD"};
  std::string text;
  const int n = std::uniform_int_distribution<int>(0, 8)(rng);
  for (int i = 0; i < n; ++i) text += kAtoms[rng() % kAtoms.size()];
  return text;
}

std::vector<int32_t> RandomIds(const Tokenizer& tok, const std::vector<int32_t>& byte_ids,
                               std::mt19937& rng) {
  std::vector<int32_t> ids;
  const auto byte_id = [&](int b) { return byte_ids.empty() ? 3 : byte_ids[b]; };
  const int32_t space = tok.PieceToId(kWs);
  const int parts = std::uniform_int_distribution<int>(1, 12)(rng);
  for (int p = 0; p < parts; ++p) {
    switch (rng() % 9) {
      case 0:  // a random byte, biased toward lead and trail bytes
        switch (rng() % 4) {
          case 0:
            ids.push_back(byte_id(0xC0 + rng() % 64));
            break;
          case 1:
          case 2:
            ids.push_back(byte_id(0x80 + rng() % 64));
            break;
          default:
            ids.push_back(byte_id(rng() % 256));
        }
        break;
      case 1: {  // a character as byte pieces, sometimes cut short
        const uint32_t cps[] = {0xE9,     0x65E5, 0x1F600,
                                0x10FFFF, 0x800,  0x10000,
                                0x7F,     0xFFFD, static_cast<uint32_t>(rng() % 0x110000)};
        uint32_t cp = cps[rng() % std::size(cps)];
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x1F44D;
        std::string c = EncodeCodePoint(cp);
        if (rng() % 4 == 0) c.resize(rng() % c.size());
        for (const char ch : c) ids.push_back(byte_id(static_cast<uint8_t>(ch)));
        break;
      }
      case 2:  // control ids
        ids.push_back(static_cast<int32_t>(rng() % 3));
        break;
      case 3:
        ids.push_back(tok.unk_id());
        break;
      case 4:
        ids.push_back(static_cast<int32_t>(rng() % tok.vocab_size()));
        break;
      case 5:
        if (space != tok.unk_id()) ids.push_back(space);
        break;
      default: {
        const std::vector<int32_t> enc = tok.Encode(RandomText(rng), rng() % 4 == 0);
        ids.insert(ids.end(), enc.begin(), enc.end());
      }
    }
  }
  return ids;
}

void RunPropertyTest(const std::vector<LoadedModel>& models, int sequences_per_model) {
  ASSERT_FALSE(models.empty());
  for (const LoadedModel& model : models) {
    ASSERT_NE(model.tokenizer, nullptr) << model.name;
    const Tokenizer& tok = *model.tokenizer;
    const std::vector<int> byte_of = ByteTable(tok);
    std::vector<int32_t> byte_ids;
    for (int b = 0; b < 256; ++b) {
      for (int32_t id = 0; id < tok.vocab_size(); ++id) {
        if (byte_of[id] == b) byte_ids.push_back(id);
      }
    }
    if (byte_ids.size() != 256) byte_ids.clear();
    std::mt19937 rng(1234);
    for (int s = 0; s < sequences_per_model; ++s) {
      const std::vector<int32_t> ids = RandomIds(tok, byte_ids, rng);
      // Decoding every prefix is quadratic; do it for a quarter of the sequences.
      ExpectStreamsLikeDecode(tok, byte_of, ids, /*check_every_prefix=*/s % 4 == 0,
                              model.name + " sequence " + std::to_string(s));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(IncrementalDetokenizerTest, MatchesDecodeOnFixtureModels) {
  RunPropertyTest(FixtureModels(), 2000);
}

TEST(IncrementalDetokenizerTest, MatchesDecodeOnHandBuiltModels) {
  RunPropertyTest(HandBuiltModels(), 2000);
}

TEST(IncrementalDetokenizerTest, EmojiFromBytePiecesComesOutWhole) {
  std::unique_ptr<Tokenizer> tok =
      MustLoad(HandBuilt({{"a", 0, SpmPieceType::kNormal}}, false, false));
  const auto byte = [&](int b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    return tok->PieceToId(name);
  };
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(byte(0xF0)), "");
  EXPECT_EQ(detok.Push(byte(0x9F)), "");
  EXPECT_EQ(detok.Push(byte(0x98)), "");
  EXPECT_EQ(detok.Push(byte(0x80)), "😀");
  EXPECT_EQ(detok.Push(tok->PieceToId("a")), "a");
  // A lead byte followed by a non-trail byte: the lead is hopeless at once.
  EXPECT_EQ(detok.Push(byte(0xE6)), "");
  EXPECT_EQ(detok.Push(byte(0x41)), std::string(kFffd) + "A");
  // Bytes that can never start a character are not held.
  EXPECT_EQ(detok.Push(byte(0xC0)), kFffd);
  EXPECT_EQ(detok.Push(byte(0xED)), "");
  EXPECT_EQ(detok.Push(byte(0xA0)), std::string(kFffd) + std::string(kFffd));  // a surrogate
  EXPECT_EQ(detok.Push(byte(0xF4)), "");
  EXPECT_EQ(detok.Push(byte(0x90)), std::string(kFffd) + std::string(kFffd));  // > U+10FFFF
  EXPECT_EQ(detok.Push(byte(0xE6)), "");
  EXPECT_EQ(detok.Push(byte(0x97)), "");
  EXPECT_EQ(detok.Finish(), std::string(kFffd) + std::string(kFffd));
  EXPECT_EQ(detok.Finish(), "");
}

TEST(IncrementalDetokenizerTest, LeadingSpaceRules) {
  const std::vector<SpmPiece> extra = {{kWs, 0, SpmPieceType::kNormal},
                                       {std::string(kWs) + "a", 0, SpmPieceType::kNormal}};
  struct Case {
    bool dummy, extra_ws;
    std::string want;  // for <bos> ▁ ▁a ▁
  };
  for (const Case& c : {Case{false, false, "  a "}, Case{true, false, " a "},
                        Case{false, true, "a "}, Case{true, true, "a "}}) {
    std::unique_ptr<Tokenizer> tok = MustLoad(HandBuilt(extra, c.dummy, c.extra_ws));
    const int32_t ws = tok->PieceToId(kWs);
    const int32_t ws_a = tok->PieceToId(std::string(kWs) + "a");
    IncrementalDetokenizer detok(*tok);
    std::string text;
    for (const int32_t id : {2, ws, ws_a, ws}) text += detok.Push(id);
    text += detok.Finish();
    EXPECT_EQ(text, c.want) << c.dummy << c.extra_ws;
  }
}

TEST(IncrementalDetokenizerTest, OutOfRangeIdsContributeNothing) {
  std::unique_ptr<Tokenizer> tok =
      MustLoad(HandBuilt({{"a", 0, SpmPieceType::kNormal}}, true, false));
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(-1), "");
  EXPECT_EQ(detok.Push(tok->vocab_size()), "");
  EXPECT_EQ(detok.Push(tok->PieceToId("a")), "a");
}

// ---------------------------------------------------------------------------------------------
// StopStringMatcher

// The reference: the whole text cut before the earliest occurrence of any stop.
std::string CutAtEarliestStop(const std::string& text, const std::vector<std::string>& stops,
                              bool* found = nullptr) {
  size_t cut = std::string::npos;
  for (const std::string& stop : stops) {
    if (!stop.empty()) cut = std::min(cut, text.find(stop));
  }
  if (found != nullptr) *found = cut != std::string::npos;
  return text.substr(0, cut);
}

// How much of `fed` may be emitted with certainty: up to the first position where a stop occurs
// or could still begin (fed[i:] a proper prefix of a stop).
size_t SafeLength(const std::string& fed, const std::vector<std::string>& stops) {
  for (size_t i = 0; i < fed.size(); ++i) {
    for (const std::string& stop : stops) {
      if (stop.empty()) continue;
      const std::string_view rest = std::string_view(fed).substr(i);
      if (rest.substr(0, stop.size()) == std::string_view(stop).substr(0, rest.size())) return i;
    }
  }
  return fed.size();
}

struct StreamResult {
  std::string text;
  bool stopped = false;
};

StreamResult Stream(const std::vector<std::string>& stops, const std::vector<std::string>& chunks) {
  StopStringMatcher matcher(stops);
  StreamResult out;
  for (const std::string& chunk : chunks) {
    StopStringMatcher::Result r = matcher.Push(chunk);
    out.text += r.text;
    if (r.stopped) {
      out.stopped = true;
      EXPECT_TRUE(matcher.stopped());
      EXPECT_EQ(matcher.Push("more").text, "");
      EXPECT_EQ(matcher.Flush(), "");
      return out;
    }
  }
  out.text += matcher.Flush();
  out.stopped = matcher.stopped();
  return out;
}

TEST(StopStringMatcherTest, Basics) {
  EXPECT_EQ(Stream({"END"}, {"hello E", "N", "D world"}).text, "hello ");
  EXPECT_TRUE(Stream({"END"}, {"hello E", "N", "D world"}).stopped);
  // Spanning three pushes, then a near miss is released.
  StopStringMatcher m({"<|end|>"});
  EXPECT_EQ(m.Push("ab<|").text, "ab");
  EXPECT_EQ(m.Push("en").text, "");
  EXPECT_EQ(m.Push("d").text, "");
  StopStringMatcher::Result r = m.Push("x!");
  EXPECT_EQ(r.text, "<|endx!");
  EXPECT_FALSE(r.stopped);
  r = m.Push("<|end|>tail");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  // A stop at the very start.
  r = StopStringMatcher({"STOP"}).Push("STOP now");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, EmptyStopListNeverHolds) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Push("abc").text, "abc");
  EXPECT_EQ(m.Push("").text, "");
  EXPECT_EQ(m.Flush(), "");
  StopStringMatcher only_empty({"", ""});
  EXPECT_EQ(only_empty.Push("x").text, "x");
}

TEST(StopStringMatcherTest, OverlappingPrefixes) {
  // "ababc" contains "abab" at 0 (and "abc" at 2): the earliest wins.
  StreamResult r = Stream({"abab", "abc"}, {"a", "b", "a", "b", "c"});
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  // "abab" fails at 0 when "c" arrives, "abc" is not there either; later "abc" matches.
  StopStringMatcher m({"abab", "abc"});
  EXPECT_EQ(m.Push("x").text, "x");
  EXPECT_EQ(m.Push("ab").text, "");
  EXPECT_EQ(m.Push("a").text, "");
  StopStringMatcher::Result step = m.Push("c");
  EXPECT_EQ(step.text, "abac");
  EXPECT_FALSE(step.stopped);
  step = m.Push("ababab");  // "abab" at 0 of this chunk
  EXPECT_EQ(step.text, "");
  EXPECT_TRUE(step.stopped);
  // Self-overlapping: "aab" inside "aaab" starts at 1, so one "a" is released.
  r = Stream({"aab"}, {"a", "a", "a", "b"});
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
  // "abab" restarting inside itself: "abaabab" has it at 3.
  r = Stream({"abab"}, {"ab", "a", "ab", "ab"});
  EXPECT_EQ(r.text, "aba");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, EarlierLongerStopWins) {
  // "bc" is complete after "abc", but "abcd" starting earlier may still match: wait.
  StopStringMatcher m({"abcd", "bc"});
  StopStringMatcher::Result r = m.Push("xabc");
  EXPECT_EQ(r.text, "x");
  EXPECT_FALSE(r.stopped);
  r = m.Push("d");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  // Same, but "abcd" fails: cut before "bc".
  StopStringMatcher m2({"abcd", "bc"});
  EXPECT_EQ(m2.Push("xabc").text, "x");
  r = m2.Push("e");
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
  // Same, but the stream ends: Flush cuts before "bc" and reports the stop.
  StopStringMatcher m3({"abcd", "bc"});
  EXPECT_EQ(m3.Push("xabc").text, "x");
  EXPECT_EQ(m3.Flush(), "a");
  EXPECT_TRUE(m3.stopped());
}

TEST(StopStringMatcherTest, NeverSplitsCharacters) {
  // "é" is C3 A9; a stop "\xA9x" (invalid UTF-8, starting with a trail byte) must not split it.
  StopStringMatcher m({"\xA9x"});
  StopStringMatcher::Result r = m.Push("caf\xC3\xA9");
  EXPECT_EQ(r.text, "caf");
  EXPECT_EQ(m.Push("!").text, "\xC3\xA9!");
  // Multibyte stops hold from a character boundary.
  StopStringMatcher m2({"日本語"});
  EXPECT_EQ(m2.Push("こんにちは日本").text, "こんにちは");
  EXPECT_EQ(m2.Push("人").text, "日本人");
}

TEST(StopStringMatcherTest, MatchesReferenceOnRandomStreams) {
  std::mt19937 rng(42);
  const std::vector<std::string> alphabet = {"a", "b", "c", "é", "日"};
  const auto random_string = [&](int max_chars) {
    std::string s;
    const int n = std::uniform_int_distribution<int>(0, max_chars)(rng);
    for (int i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<std::string> stops(rng() % 4);
    for (std::string& stop : stops) stop = random_string(4);
    const std::string full = random_string(20);
    // Chunks at character boundaries, as the detokenizer emits them.
    std::vector<std::string> chunks;
    for (size_t pos = 0; pos < full.size();) {
      size_t end = pos + 1 + rng() % 6;
      while (end < full.size() && (static_cast<uint8_t>(full[end]) & 0xC0) == 0x80) ++end;
      end = std::min(end, full.size());
      chunks.push_back(full.substr(pos, end - pos));
      pos = end;
    }
    if (rng() % 5 == 0) chunks.insert(chunks.begin() + rng() % (chunks.size() + 1), "");

    StopStringMatcher matcher(stops);
    std::string fed, emitted;
    bool stopped = false;
    for (const std::string& chunk : chunks) {
      fed += chunk;
      StopStringMatcher::Result r = matcher.Push(chunk);
      ASSERT_TRUE(IsWellFormedUtf8(r.text));
      emitted += r.text;
      if (r.stopped) {
        stopped = true;
        break;
      }
      // Emitted exactly as much as is certain: no more, no less.
      ASSERT_EQ(emitted, fed.substr(0, SafeLength(fed, stops)))
          << "fed \"" << fed << "\" stops " << stops.size();
    }
    bool found = false;
    const std::string want = CutAtEarliestStop(full, stops, &found);
    if (!stopped) emitted += matcher.Flush();
    // Stopping early never changes the outcome: the continuation could not have cut earlier.
    ASSERT_EQ(emitted, want) << "full \"" << full << "\"";
    ASSERT_EQ(matcher.stopped(), found) << "full \"" << full << "\"";
    if (stopped) {
      // Stopped as soon as the earliest match was certain.
      ASSERT_EQ(CutAtEarliestStop(fed, stops), want);
    }
  }
}

}  // namespace
}  // namespace vg::engine
