#include "engine/runner/generator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vg::engine {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

}  // namespace

absl::StatusOr<std::unique_ptr<Generator>> Generator::Create(const std::filesystem::path& model_dir,
                                                             const GeneratorOptions& options) {
  auto generator = std::unique_ptr<Generator>(new Generator());
  auto checkpoint = Checkpoint::Open(model_dir, MatrixLayout::kTiles);
  if (!checkpoint.ok()) return checkpoint.status();
  generator->checkpoint_ = *std::move(checkpoint);

  const std::filesystem::path tokenizer_path = model_dir / "tokenizer.model";
  auto tokenizer = Tokenizer::Load(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  generator->tokenizer_ = *std::move(tokenizer);
  const ModelConfig& config = generator->checkpoint_->config();
  if (generator->tokenizer_->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer_path.string(), ": the tokenizer has ", generator->tokenizer_->vocab_size(),
        " pieces but config.json vocab_size is ", config.vocab_size));
  }

  CpuBackendOptions backend_options;
  backend_options.num_threads = options.num_threads;
  auto backend = CpuBackend::Create(*generator->checkpoint_, backend_options);
  if (!backend.ok()) return backend.status();
  generator->backend_ = *std::move(backend);
  return generator;
}

absl::Status Generator::ValidatePrompt(const std::vector<int32_t>& prompt_ids) const {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t vocab = config().vocab_size;
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] < 0 || prompt_ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", prompt_ids[i], " at index ", i,
                       " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (static_cast<int64_t>(prompt_ids.size()) >= context_length()) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_ids.size(),
                                                   " tokens; the model's context is ",
                                                   context_length(), " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationResult> Generator::Generate(
    const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
    const std::function<void(int32_t, float)>& on_token) {
  if (absl::Status status = ValidatePrompt(prompt_ids); !status.ok()) return status;
  if (absl::Status status = ValidateSamplingParams(options.sampling); !status.ok()) return status;
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }

  GenerationResult result;
  result.prompt_token_ids = prompt_ids;
  const int64_t room = context_length() - static_cast<int64_t>(prompt_ids.size());
  const int64_t budget = std::min<int64_t>(options.max_new_tokens, room);
  if (budget == 0) return result;

  // Blocks are taken as the sequence grows and all go back to the pool when this call returns.
  auto pool = BlockPool::Create(backend_->num_blocks());
  if (!pool.ok()) return pool.status();
  std::vector<int32_t> block_table;
  auto ensure_blocks = [&](int64_t positions) -> absl::Status {
    while (static_cast<int64_t>(block_table.size()) * backend_->block_size() < positions) {
      auto block = pool->Allocate();
      if (!block.ok()) return block.status();
      block_table.push_back(*block);
    }
    return absl::OkStatus();
  };

  Sampler sampler(options.sampling, prompt_ids);
  std::vector<int32_t> step_tokens = prompt_ids;
  int32_t position = 0;
  Logits logits;
  while (true) {
    if (absl::Status s = ensure_blocks(position + static_cast<int64_t>(step_tokens.size()));
        !s.ok()) {
      return s;
    }
    BatchPlan plan;
    plan.entries.push_back(BatchEntry{.sequence_id = 0,
                                      .token_ids = step_tokens,
                                      .start_position = position,
                                      .block_table = block_table,
                                      .logits = LogitsMode::kLast});
    if (absl::Status s = backend_->Forward(plan, &logits); !s.ok()) return s;
    position += static_cast<int32_t>(step_tokens.size());

    const std::span<const float> row = logits.Row(0);
    const Sampler::Choice choice = sampler.Sample(row);
    const int32_t token = choice.token_id;
    const float logprob = choice.logprob;
    result.token_ids.push_back(token);
    result.logprobs.push_back(logprob);
    if (on_token) on_token(token, logprob);

    if (config().IsEos(token)) {
      result.finish_reason = FinishReason::kEos;
      break;
    }
    if (static_cast<int64_t>(result.token_ids.size()) >= budget) {
      result.finish_reason = FinishReason::kLength;
      break;
    }
    step_tokens.assign(1, token);
  }
  return result;
}

std::string TextStreamer::Push(int32_t token_id) {
  ids_.push_back(token_id);
  auto text = tokenizer_.Decode(ids_);
  if (!text.ok()) return "";
  std::string_view view = *text;
  // Hold back a trailing U+FFFD: it may be the start of a character whose bytes are still coming.
  size_t end = view.size();
  while (end >= emitted_ + kReplacementCharacter.size() &&
         view.substr(end - kReplacementCharacter.size(), kReplacementCharacter.size()) ==
             kReplacementCharacter) {
    end -= kReplacementCharacter.size();
  }
  if (end <= emitted_) return "";
  std::string out(view.substr(emitted_, end - emitted_));
  emitted_ = end;
  return out;
}

std::string TextStreamer::Finish() {
  auto text = tokenizer_.Decode(ids_);
  if (!text.ok() || text->size() <= emitted_) return "";
  std::string out = text->substr(emitted_);
  emitted_ = text->size();
  return out;
}

}  // namespace vg::engine
