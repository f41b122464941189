// vaultgemma-run: offline, in-process generation from a checkpoint directory or a Hugging Face id
// in the local cache; the counterpart of `transformers run`. Exit codes: 0 success, 2 bad usage or
// bad input (each reported as one line on stderr), 1 anything else.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/model_path.h"
#include "engine/runner/command_line.h"
#include "engine/runner/generator.h"
#include "nlohmann/json.hpp"

namespace vg::engine {
namespace {

constexpr char kUsage[] = R"(usage: vaultgemma-run --model DIR_OR_ID [options]

Generates a continuation of a prompt with VaultGemma on the CPU.

  --model DIR|ORG/NAME   checkpoint directory, or a Hugging Face id resolved offline in
                         $HF_HUB_CACHE / $HF_HOME/hub / ~/.cache/huggingface/hub
  --prompt TEXT          prompt text (BOS is prepended); default: read standard input
  --prompt-ids 2,651,... prompt token ids, used as given (no BOS added)
  --max-new-tokens N     default 64
  --temperature T        default 0 (greedy)
  --top-k K              default 0 (off)
  --top-p P              default 1 (off)
  --seed S               random seed for sampling, default 0
  --threads N            compute threads, default: all cores
  --json                 print one JSON object: prompt_token_ids, token_ids, text, logprobs,
                         finish_reason
  --help                 this text
)";

constexpr FlagSpec kFlags[] = {
    {"model"}, {"prompt"}, {"prompt-ids"}, {"max-new-tokens"}, {"temperature"}, {"top-k"},
    {"top-p"}, {"seed"},   {"threads"},    {"json", false},    {"help", false},
};

// Bad input (the user's to fix) exits 2; anything else 1.
int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
      return 2;
    default:
      return 1;
  }
}

int Fail(const absl::Status& status) {
  std::cerr << "vaultgemma-run: " << status.message() << "\n";
  return ExitCodeFor(status);
}

int UsageError(absl::string_view message) {
  std::cerr << "vaultgemma-run: " << message << " (see --help)\n";
  return 2;
}

struct RunArgs {
  std::string model;
  std::optional<std::string> prompt;
  std::vector<int32_t> prompt_ids;
  bool has_prompt_ids = false;
  GenerateOptions generate;
  int threads = 0;
  bool json = false;
};

absl::StatusOr<RunArgs> ReadArgs(const CommandLine& cl) {
  RunArgs args;
  auto model = cl.GetString("model");
  if (!model.has_value() || model->empty())
    return absl::InvalidArgumentError("--model is required");
  args.model = *model;
  args.prompt = cl.GetString("prompt");
  args.has_prompt_ids = cl.Has("prompt-ids");
  if (args.prompt.has_value() && args.has_prompt_ids) {
    return absl::InvalidArgumentError("give either --prompt or --prompt-ids, not both");
  }
  auto ids = cl.GetIntList("prompt-ids");
  if (!ids.ok()) return ids.status();
  args.prompt_ids = *std::move(ids);

  auto max_new = cl.GetInt("max-new-tokens", 64, 0, 1 << 20);
  auto top_k = cl.GetInt("top-k", 0, 0, 1 << 30);
  auto threads = cl.GetInt("threads", 0, 0, 1024);
  auto temperature = cl.GetDouble("temperature", 0.0);
  auto top_p = cl.GetDouble("top-p", 1.0);
  auto seed = cl.GetUint64("seed", 0);
  for (const absl::Status& s : {max_new.status(), top_k.status(), threads.status(),
                                temperature.status(), top_p.status(), seed.status()}) {
    if (!s.ok()) return s;
  }
  args.generate.max_new_tokens = static_cast<int32_t>(*max_new);
  args.generate.sampling.temperature = static_cast<float>(*temperature);
  args.generate.sampling.top_k = static_cast<int32_t>(*top_k);
  args.generate.sampling.top_p = static_cast<float>(*top_p);
  args.generate.sampling.seed = *seed;
  if (*temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--temperature must be >= 0, got ", *temperature));
  }
  if (!(*top_p > 0 && *top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--top-p must be in (0, 1], got ", *top_p));
  }
  args.threads = static_cast<int>(*threads);
  args.json = cl.Has("json");
  return args;
}

int Run(int argc, char** argv) {
  auto cl = CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok()) return UsageError(cl.status().message());
  if (cl->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto args = ReadArgs(*cl);
  if (!args.ok()) return UsageError(args.status().message());

  std::string prompt_text;
  if (!args->has_prompt_ids) {
    if (args->prompt.has_value()) {
      prompt_text = *args->prompt;
    } else {
      if (isatty(STDIN_FILENO))
        return UsageError("no prompt: give --prompt, --prompt-ids or stdin");
      prompt_text.assign(std::istreambuf_iterator<char>(std::cin), {});
      // `echo "text" | vaultgemma-run` means "text", as with `transformers run`.
      if (!prompt_text.empty() && prompt_text.back() == '\n') prompt_text.pop_back();
    }
    if (prompt_text.empty()) return UsageError("the prompt is empty");
  }

  auto dir = ResolveModelPath(args->model);
  if (!dir.ok()) return Fail(dir.status());
  auto generator = Generator::Create(*dir, GeneratorOptions{.num_threads = args->threads});
  if (!generator.ok()) return Fail(generator.status());
  const Tokenizer& tokenizer = (*generator)->tokenizer();

  std::vector<int32_t> prompt_ids = args->prompt_ids;
  if (!args->has_prompt_ids) {
    // BOS is the model's (config.json bos_token_id), as transformers' tokenizer adds `<bos>`;
    // the tokenizer file's own BOS setting varies between exports.
    prompt_ids = {static_cast<int32_t>((*generator)->config().bos_token_id)};
    const std::vector<int32_t> text_ids = tokenizer.Encode(prompt_text, /*add_bos=*/false);
    prompt_ids.insert(prompt_ids.end(), text_ids.begin(), text_ids.end());
  }
  if (absl::Status s = (*generator)->ValidatePrompt(prompt_ids); !s.ok()) return Fail(s);

  TextStreamer streamer(tokenizer);
  std::function<void(int32_t, float)> on_token;
  if (!args->json) {
    on_token = [&](int32_t id, float) { std::cout << streamer.Push(id) << std::flush; };
  }
  auto result = (*generator)->Generate(prompt_ids, args->generate, on_token);
  if (!result.ok()) {
    if (!args->json) std::cout << "\n";
    return Fail(result.status());
  }

  if (!args->json) {
    std::cout << streamer.Finish() << "\n";
    return 0;
  }
  auto text = tokenizer.Decode(result->token_ids);
  if (!text.ok()) return Fail(text.status());
  nlohmann::json out;
  out["prompt_token_ids"] = result->prompt_token_ids;
  out["token_ids"] = result->token_ids;
  out["text"] = *text;
  out["logprobs"] = result->logprobs;
  out["finish_reason"] = std::string(FinishReasonName(result->finish_reason));
  std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

}  // namespace
}  // namespace vg::engine

int main(int argc, char** argv) { return vg::engine::Run(argc, argv); }
