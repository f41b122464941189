// Parity with the real SentencePiece: every committed model (and in-memory variants of them with
// UNUSED pieces and without byte fallback) encodes a corpus of test lines exactly as
// `spm_encode --output_format=id` does, and decodes ids exactly as `spm_decode --input_format=id`
// does. The CLIs run as separate processes (libsentencepiece cannot be linked; TOOLCHAIN.md).
// Missing CLIs are a failure, not a skip: `make deps` installs them.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/model_proto_writer.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(VG_SOURCE_DIR) / "tests/fixtures/tokenizers";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const fs::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
}

// Runs `command` through the shell; its stdout, or an error message prefixed "ERROR:".
std::string RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "ERROR: popen failed";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int rc = pclose(pipe);
  if (rc != 0) return "ERROR: exit status " + std::to_string(rc) + " from: " + command;
  return out;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string JoinIds(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out.push_back(' ');
    out += std::to_string(ids[i]);
  }
  return out;
}

bool HaveTool(const std::string& name) {
  return RunCommand("command -v " + name + " >/dev/null 2>&1 && echo yes") == "yes\n";
}

// Lines exercising each rule; none contains '\n' (spm_encode reads lines with getline).
std::vector<std::string> TestLines() {
  std::vector<std::string> lines = {
      "",
      "Hello world",
      "Hello  world",
      " leading space",
      "   three leading spaces",
      "trailing space ",
      "trailing spaces   ",
      "multiple     spaces    inside",
      " ",
      "     ",
      "\t",
      "\ttab",
      "\t\tdouble tab",
      "\t\t\t\t\t\tsix tabs",
      "mixed \t \t tabs and spaces",
      "carriage return\r",
      "\r",
      "a\rb",
      "naïve résumé coöperate façade jalapeño São Paulo",
      "Zażółć gęślą jaźń",
      "Привет, мир! Ёжик.",
      "Ελληνικά γράμματα",
      "今日はとても良い天気です。",
      "我们明天早上八点见面",
      "한국어 문장",
      "مرحبا بالعالم",
      "नमस्ते दुनिया",
      "emoji 🎉🎉🎉 🍰 🤔 ❤️ 👩‍👩‍👧 🇫🇷🇯🇵",
      "rare chars: ∮ ⊕ ⅋ ☃ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓂀 ᚠᛇᚻ",
      "digits 0123456789 3.14159 2025-11-28 1e-9 0x1F 12345678901234567890",
      "price $19.99, 50% off, 3:2 ratio",
      "<bos>literal bos<eos> and <pad> <unk> in text",
      "<start_of_turn>user\rhello<end_of_turn>",
      "<start_of_turn>model<end_of_turn><start_of_turn>",
      "<start_of_turn",
      "<table><tr><td>cell</td></tr></table>",
      "<s>struck</s> <b>bold</b> <br> <div>x</div>",
      "[toxicity=0] <mask> <unused0><unused1>",
      "\xE2\x96\x81 literal lower one eighth block \xE2\x96\x81\xE2\x96\x81",
      "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81"
      "b",
      "   b",
      "invalid utf8: \xFF \xFE \xC0\xAF \xE0\x80\x80 \xED\xA0\x80 \xF4\x90\x80\x80 end",
      "truncated \xE4\xBD",
      "\xE4\xBD",
      "\x80\x81\x82",
      "lone continuation \xBF and overlong \xC1\xBF",
      "\xEF\xBF\xBD replacement char itself",
      "control chars \x01\x02\x1B[0m\x7F",
      "fullwidth ＡＢＣ１２３ and ligature ﬁ and ² ½ ℃ Ⅻ",
      "def f(x):    return x * 2  # comment",
      "for (int i = 0; i < n; ++i) { sum += a[i]; }",
      "https://example.com/path?q=1&lang=en#frag user@example.org",
      "a",
      "aa",
      "ab",
      "abc",
  };
  lines.push_back(std::string(300, 'a'));
  lines.push_back(std::string(257, ' ') + "x");
  lines.push_back(std::string(100, '\t'));
  lines.push_back(std::string(64, '9'));
  std::string rep;
  for (int i = 0; i < 50; ++i) rep += "ab";
  lines.push_back(rep);
  std::string euro;
  for (int i = 0; i < 40; ++i) euro += "\xE2\x82\xAC";
  lines.push_back(euro);
  std::string turns;
  for (int i = 0; i < 20; ++i) turns += "<start_of_turn>";
  lines.push_back(turns);
  // Every byte value 1..255 (no '\n'), as single-byte lines and one line with all of them.
  std::string all;
  for (int b = 1; b < 256; ++b) {
    if (b == '\n') continue;
    lines.push_back(std::string(1, static_cast<char>(b)));
    all.push_back(static_cast<char>(b));
  }
  lines.push_back(all);
  // The training corpus, for volume.
  for (const std::string& line :
       SplitLines(ReadFile(fs::path(VG_SOURCE_DIR) / "tools/tokenizers/corpus.txt"))) {
    lines.push_back(line);
  }
  return lines;
}

struct ModelCase {
  std::string name;
  std::string bytes;
};

// The committed fixtures plus variants built in memory.
std::vector<ModelCase> Models() {
  std::vector<ModelCase> models;
  for (const char* name : {"gemma_bpe_700", "gemma_bpe_1500", "spm_defaults_bpe_1000"}) {
    models.push_back({name, ReadFile(kFixtures / (std::string(name) + ".model"))});
  }
  // UNUSED pieces: every third multi-character NORMAL piece. They stay merge targets and are
  // resegmented into the halves they were merged from.
  absl::StatusOr<SpmModelProto> m = ParseModelProto(models[1].bytes);
  if (m.ok()) {
    int n = 0;
    for (SpmPiece& p : m->pieces) {
      if (p.type == SpmPieceType::kNormal && p.piece.size() > 1 && ++n % 3 == 0) {
        p.type = SpmPieceType::kUnused;
      }
    }
    models.push_back({"gemma_bpe_1500_unused", testing::SerializeModelProto(*m)});
  }
  // No byte fallback: byte pieces become control pieces, unknown characters fuse into <unk>.
  m = ParseModelProto(models[0].bytes);
  if (m.ok()) {
    m->trainer_spec.byte_fallback = false;
    for (SpmPiece& p : m->pieces) {
      if (p.type == SpmPieceType::kByte) p.type = SpmPieceType::kControl;
    }
    models.push_back({"gemma_bpe_700_no_byte_fallback", testing::SerializeModelProto(*m)});
  }
  // The dummy prefix without whitespace removal (decode strips exactly one leading space).
  m = ParseModelProto(models[1].bytes);
  if (m.ok()) {
    m->normalizer_spec.add_dummy_prefix = true;
    models.push_back({"gemma_bpe_1500_dummy_prefix", testing::SerializeModelProto(*m)});
  }
  return models;
}

class TokenizerSpmParityTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(HaveTool("spm_encode") && HaveTool("spm_decode"))
        << "spm_encode / spm_decode (Debian package `sentencepiece`) are required for the "
           "tokenizer parity tests; run `make deps`";
    dir_ = fs::temp_directory_path() /
           ("vg_spm_parity_" + std::to_string(getpid()) + "_" + std::to_string(GetParam()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

TEST_P(TokenizerSpmParityTest, EncodeAndDecodeMatchSpm) {
  const std::vector<ModelCase> models = Models();
  ASSERT_LT(GetParam(), static_cast<int>(models.size()));
  const ModelCase& model = models[GetParam()];
  SCOPED_TRACE(model.name);
  ASSERT_FALSE(model.bytes.empty());
  const fs::path model_path = dir_ / "m.model";
  WriteFile(model_path, model.bytes);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromSerializedProto(model.bytes);
  ASSERT_TRUE(tok.ok()) << tok.status();

  const std::vector<std::string> lines = TestLines();
  std::string input;
  for (const std::string& line : lines) input += line + "\n";
  WriteFile(dir_ / "input.txt", input);
  const std::string encoded = RunCommand("spm_encode --model=" + model_path.string() +
                                         " --output_format=id < " + (dir_ / "input.txt").string());
  ASSERT_EQ(encoded.rfind("ERROR:", 0), std::string::npos) << encoded;
  const std::vector<std::string> id_lines = SplitLines(encoded);
  ASSERT_EQ(id_lines.size(), lines.size());
  size_t ids_compared = 0;
  std::vector<std::vector<int32_t>> all_ids;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::vector<int32_t> ids = (*tok)->Encode(lines[i], /*add_bos=*/false);
    EXPECT_EQ(JoinIds(ids), id_lines[i]) << "line " << i << ": \"" << lines[i] << "\"";
    ids_compared += ids.size();
    all_ids.push_back(ids);
  }

  // Decode: the encoded lines, then random id sequences (byte pieces in random order make invalid
  // UTF-8). Ids whose text contains '\n' are left out: spm_decode prints one line per sequence.
  std::mt19937 rng(1234 + GetParam());
  std::vector<int32_t> candidates;
  for (int32_t id = 0; id < (*tok)->vocab_size(); ++id) {
    if ((*tok)->PieceBytes(id).find('\n') == std::string::npos) candidates.push_back(id);
  }
  std::vector<int32_t> byte_ids;
  for (int32_t id : candidates) {
    if ((*tok)->IdToPiece(id).rfind("<0x", 0) == 0) byte_ids.push_back(id);
  }
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> ids(rng() % 12);
    for (int32_t& id : ids) {
      const bool use_byte = !byte_ids.empty() && rng() % 2 == 0;
      id = use_byte ? byte_ids[rng() % byte_ids.size()] : candidates[rng() % candidates.size()];
    }
    all_ids.push_back(ids);
  }
  std::string id_input;
  for (const auto& ids : all_ids) id_input += JoinIds(ids) + "\n";
  WriteFile(dir_ / "ids.txt", id_input);
  const std::string decoded = RunCommand("spm_decode --model=" + model_path.string() +
                                         " --input_format=id < " + (dir_ / "ids.txt").string());
  ASSERT_EQ(decoded.rfind("ERROR:", 0), std::string::npos) << decoded;
  const std::vector<std::string> text_lines = SplitLines(decoded);
  ASSERT_EQ(text_lines.size(), all_ids.size());
  for (size_t i = 0; i < all_ids.size(); ++i) {
    absl::StatusOr<std::string> text = (*tok)->Decode(all_ids[i]);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, text_lines[i]) << "ids: " << JoinIds(all_ids[i]);
  }
  std::printf("[ parity ] %s: %zu lines, %zu ids encoded; %zu id sequences decoded\n",
              model.name.c_str(), lines.size(), ids_compared, all_ids.size());
}

INSTANTIATE_TEST_SUITE_P(AllModels, TokenizerSpmParityTest, ::testing::Range(0, 6));

}  // namespace
}  // namespace vg::engine
