#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/model_proto.h"
#include "engine/tokenizer/utf8.h"

namespace vg::engine {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such tokenizer file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": cannot read the file"));
  }
  return FromSerializedProto(contents.str(), path.string());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSerializedProto(std::string_view bytes,
                                                                          std::string_view source) {
  absl::StatusOr<SpmModelProto> model = ParseModelProto(bytes);
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(source), ": not a SentencePiece ModelProto: ", model.status().message()));
  }
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer =
      BpeTokenizer::Create(*std::move(model), source);
  if (!tokenizer.ok()) return tokenizer.status();
  return std::unique_ptr<Tokenizer>(std::move(*tokenizer));
}

int32_t Tokenizer::PieceToId(std::string_view piece) const {
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (IdToPiece(id) == piece) return id;
  }
  return unk_id();
}

std::string Tokenizer::PieceBytes(int32_t id) const {
  std::string text;
  utf8::AppendUnescaped(IdToPiece(id), text);
  return text;
}

}  // namespace vg::engine
