#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/kv_cache.h"
#include "engine/kv/kv_cache_manager.h"
#include "engine/model/checkpoint.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace vg::engine {
namespace {

constexpr int32_t kMaxTopLogprobs = 20;

// Everything the loop keeps for one admitted request besides what the scheduler owns.
struct ActiveRequest {
  ActiveRequest(Request r, std::shared_ptr<TokenSink> s, const Tokenizer& tokenizer,
                int32_t max_total)
      : request(std::move(r)),
        sink(std::move(s)),
        sampler(request.sampling, request.prompt_token_ids),
        detokenizer(tokenizer),
        stop_matcher(request.stopping.stop_strings),
        max_total_tokens(max_total) {}

  Request request;
  std::shared_ptr<TokenSink> sink;
  Sampler sampler;
  IncrementalDetokenizer detokenizer;
  StopStringMatcher stop_matcher;
  int32_t max_total_tokens;  // prompt + max_new_tokens, cut to the context and the KV pool
  int32_t completion_tokens = 0;
  double submitted_at = 0;
  double admitted_at = -1;
  double first_token_at = -1;
};

struct Intake {
  int64_t seq_id;
  Request request;
  std::shared_ptr<TokenSink> sink;
  double submitted_at;
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& options, const ModelConfig& config, Backend* backend,
             const Tokenizer* tokenizer, std::unique_ptr<KvCacheManager> kv)
      : options_(options),
        config_(config),
        backend_(backend),
        tokenizer_(tokenizer),
        kv_(std::move(kv)),
        clock_(options.clock != nullptr ? *options.clock : Clock::Real()),
        step_observer_(options.step_observer),
        scheduler_(SchedulerOptions{options.max_num_seqs, options.max_batched_tokens}, kv_.get()) {
    loop_ = std::thread([this] { Loop(); });
  }

  ~EngineImpl() override { Shutdown(/*drain=*/false); }

  // Owned resources for engines made by Create (empty for CreateForTest).
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Tokenizer> owned_tokenizer_;
  std::unique_ptr<Backend> owned_backend_;

  absl::Status Submit(Request request, std::shared_ptr<TokenSink> sink) override;
  void Cancel(const std::string& request_id) override;
  EngineStats Stats() const override;
  void Shutdown(bool drain) override;
  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }

 private:
  absl::Status Validate(const Request& request) const;
  void Loop();
  void Admit(Intake intake);
  // Runs one scheduled step; returns its duration in seconds.
  double RunStep();
  // For a backend that samples on its device: each sampling chunk's RowSampling, in plan order.
  // Their spans point into the Samplers' histories, which nothing changes before Accept.
  std::vector<RowSampling> DeviceRows(const StepSchedule& schedule) const;
  // OK when ForwardAndSample returned one in-vocabulary token per row, else INTERNAL.
  absl::Status CheckSamples(size_t rows, const std::vector<RowSample>& samples) const;
  // Appends this step's token of `seq_id`, chosen on the host or the device, and sends its event:
  // text through the detokenizer and the stop matcher, then the stop checks.
  void AppendChoice(int64_t seq_id, Sampler::Choice choice);
  // Ends a request: releases its blocks, frees its id and sends `event` (finished) to its sink.
  void Finish(int64_t seq_id, TokenEvent event, FinishReason reason);
  void PublishStats(double step_seconds);

  const EngineOptions options_;
  const ModelConfig config_;
  Backend* const backend_;
  const Tokenizer* const tokenizer_;

  // Loop-thread state.
  std::unique_ptr<KvCacheManager> kv_;
  const Clock& clock_;
  StepObserver* const step_observer_;  // optional
  Scheduler scheduler_;
  absl::flat_hash_map<int64_t, std::unique_ptr<ActiveRequest>> active_;
  // Events of this iteration, delivered after the stats snapshot is published, so a caller that
  // sees a request finish also sees Stats() without it.
  std::vector<std::pair<std::shared_ptr<TokenSink>, TokenEvent>> outbox_;
  int64_t prompt_tokens_processed_ = 0;
  int64_t generation_tokens_ = 0;
  int64_t cached_prompt_tokens_ = 0;
  int64_t steps_ = 0;
  double total_step_seconds_ = 0;

  // Shared with caller threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Intake> intake_;
  std::vector<std::string> cancels_;
  absl::flat_hash_map<std::string, int64_t> live_ids_;  // admitted or queued, not finished
  int64_t next_seq_id_ = 1;
  bool accepting_ = true;
  bool stop_ = false;
  bool abort_ = false;
  EngineStats stats_;

  std::mutex shutdown_mu_;
  std::thread loop_;
};

absl::Status EngineImpl::Validate(const Request& r) const {
  if (r.id.empty()) return absl::InvalidArgumentError("request id is empty");
  if (r.prompt_token_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (size_t i = 0; i < r.prompt_token_ids.size(); ++i) {
    const int32_t id = r.prompt_token_ids[i];
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  const int64_t prompt = static_cast<int64_t>(r.prompt_token_ids.size());
  if (prompt >= config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt,
                                                   " tokens; the model's context is ",
                                                   config_.max_position_embeddings, " tokens"));
  }
  const int64_t pool = static_cast<int64_t>(kv_->num_blocks()) * kv_->block_size();
  if (prompt >= pool) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt has ", prompt, " tokens; the KV cache holds ", pool, " positions"));
  }
  if (r.stopping.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", r.stopping.max_new_tokens));
  }
  for (int32_t id : r.stopping.stop_token_ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", id, " is outside the vocabulary"));
    }
  }
  if (r.top_logprobs < 0 || r.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", r.top_logprobs));
  }
  return ValidateSamplingParams(r.sampling);
}

absl::Status EngineImpl::Submit(Request request, std::shared_ptr<TokenSink> sink) {
  if (sink == nullptr) return absl::InvalidArgumentError("no sink");
  if (absl::Status s = Validate(request); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  if (!accepting_) return absl::UnavailableError("the engine is shutting down");
  if (live_ids_.contains(request.id)) {
    return absl::AlreadyExistsError(absl::StrCat("request id '", request.id, "' is in use"));
  }
  // Live requests beyond the ones a step can run are the queue; it is bounded.
  if (static_cast<int64_t>(live_ids_.size()) >=
      static_cast<int64_t>(options_.max_num_seqs) + options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", options_.max_waiting, " waiting requests)"));
  }
  const int64_t seq_id = next_seq_id_++;
  live_ids_[request.id] = seq_id;
  intake_.push_back(Intake{seq_id, std::move(request), std::move(sink), clock_.Now()});
  cv_.notify_one();
  return absl::OkStatus();
}

void EngineImpl::Cancel(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_ids_.contains(request_id)) return;
  cancels_.push_back(request_id);
  cv_.notify_one();
}

EngineStats EngineImpl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats out = stats_;
  out.waiting += static_cast<int32_t>(intake_.size());
  return out;
}

void EngineImpl::Shutdown(bool drain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stop_ = true;
    if (!drain) abort_ = true;
    cv_.notify_one();
  }
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (loop_.joinable()) loop_.join();
}

void EngineImpl::Loop() {
  while (true) {
    std::vector<Intake> intake;
    std::vector<std::string> cancels;
    bool abort = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || !intake_.empty() || !cancels_.empty() || !scheduler_.empty();
      });
      intake.swap(intake_);
      cancels.swap(cancels_);
      abort = abort_;
      if (stop_ && intake.empty() && scheduler_.empty()) break;
    }
    for (Intake& item : intake) Admit(std::move(item));
    for (const std::string& id : cancels) {
      int64_t seq_id = -1;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = live_ids_.find(id);
        if (it != live_ids_.end()) seq_id = it->second;
      }
      if (seq_id >= 0 && active_.contains(seq_id)) Finish(seq_id, {}, FinishReason::kCancelled);
    }
    if (abort) {
      std::vector<int64_t> all;
      for (const auto& [seq_id, unused] : active_) all.push_back(seq_id);
      for (int64_t seq_id : all) Finish(seq_id, {}, FinishReason::kCancelled);
    }
    const double seconds = scheduler_.empty() ? 0.0 : RunStep();
    PublishStats(seconds);
    for (auto& [sink, event] : outbox_) sink->OnEvent(std::move(event));
    outbox_.clear();
  }
  PublishStats(0);
}

void EngineImpl::Admit(Intake item) {
  const int64_t prompt = static_cast<int64_t>(item.request.prompt_token_ids.size());
  const int64_t pool = static_cast<int64_t>(kv_->num_blocks()) * kv_->block_size();
  const int64_t max_total = std::min<int64_t>(
      {prompt + item.request.stopping.max_new_tokens, config_.max_position_embeddings, pool});
  absl::Status added =
      scheduler_.Add(item.seq_id, item.request.prompt_token_ids, item.request.cache_salt);
  auto active = std::make_unique<ActiveRequest>(std::move(item.request), std::move(item.sink),
                                                *tokenizer_, static_cast<int32_t>(max_total));
  active->submitted_at = item.submitted_at;
  active_[item.seq_id] = std::move(active);
  if (!added.ok()) {
    TokenEvent event;
    event.status = added;
    Finish(item.seq_id, std::move(event), FinishReason::kError);
  }
}

double EngineImpl::RunStep() {
  const double start = clock_.Now();
  StepSchedule schedule = scheduler_.Schedule();
  if (schedule.chunks.empty()) {
    // Nothing fits even with every block free: the queue head can never run. Fail it rather than
    // spin (unreachable while Validate and max_total_tokens keep sequences within the pool).
    if (scheduler_.num_running() == 0 && !active_.empty()) {
      TokenEvent event;
      event.status = absl::ResourceExhaustedError("the request does not fit in the KV cache");
      Finish(active_.begin()->first, std::move(event), FinishReason::kError);
    }
    return 0.0;
  }

  BatchPlan plan;
  plan.entries.reserve(schedule.chunks.size());
  for (const ScheduledChunk& c : schedule.chunks) {
    ActiveRequest& a = *active_.at(c.seq_id);
    if (a.admitted_at < 0) a.admitted_at = start;
    plan.entries.push_back(
        BatchEntry{.sequence_id = c.seq_id,
                   .token_ids = scheduler_.Tokens(c.seq_id).subspan(c.start, c.num_tokens),
                   .start_position = c.start,
                   .block_table = kv_->BlockTable(c.seq_id),
                   .logits = c.samples ? LogitsMode::kLast : LogitsMode::kNone});
  }
  // A backend that samples on its device returns the tokens, others the rows for the Samplers.
  const bool on_device = backend_->samples_on_device();
  const std::vector<RowSampling> rows =
      on_device ? DeviceRows(schedule) : std::vector<RowSampling>();
  Logits logits;
  std::vector<RowSample> samples;
  StepInfo step;
  const double forward_start = clock_.Now();
  absl::Status status = on_device ? backend_->ForwardAndSample(plan, rows, &samples)
                                  : backend_->Forward(plan, &logits);
  step.forward_seconds = clock_.Now() - forward_start;
  if (status.ok() && on_device) status = CheckSamples(rows.size(), samples);
  if (!status.ok()) {
    for (const ScheduledChunk& c : schedule.chunks) {
      TokenEvent event;
      event.status = status;
      Finish(c.seq_id, std::move(event), FinishReason::kError);
    }
  } else {
    scheduler_.OnComputed(schedule);
    int64_t row = 0;
    step.num_sequences = static_cast<int32_t>(schedule.chunks.size());
    for (const ScheduledChunk& c : schedule.chunks) {
      ActiveRequest& a = *active_.at(c.seq_id);
      const int32_t prompt = static_cast<int32_t>(a.request.prompt_token_ids.size());
      prompt_tokens_processed_ += std::max(0, std::min(c.start + c.num_tokens, prompt) - c.start);
      step.num_tokens += c.num_tokens;
      if (c.start < prompt) ++step.num_prefill_sequences;
      if (!c.samples) continue;
      Sampler::Choice choice = on_device
                                   ? a.sampler.Accept(std::move(samples[row]))
                                   : a.sampler.Sample(logits.Row(row), a.request.top_logprobs);
      ++row;
      AppendChoice(c.seq_id, std::move(choice));
    }
  }
  ++steps_;
  const double seconds = clock_.Now() - start;
  total_step_seconds_ += seconds;
  if (step_observer_ != nullptr && step.num_sequences > 0) {
    step.seconds = seconds;
    step_observer_->OnStep(step);
  }
  return seconds;
}

std::vector<RowSampling> EngineImpl::DeviceRows(const StepSchedule& schedule) const {
  std::vector<RowSampling> rows;
  for (const ScheduledChunk& c : schedule.chunks) {
    if (!c.samples) continue;
    const ActiveRequest& a = *active_.at(c.seq_id);
    rows.push_back(a.sampler.DeviceRow(a.request.top_logprobs));
  }
  return rows;
}

absl::Status EngineImpl::CheckSamples(size_t rows, const std::vector<RowSample>& samples) const {
  if (samples.size() != rows) {
    return absl::InternalError(
        absl::StrCat("the backend sampled ", samples.size(), " rows of ", rows));
  }
  for (const RowSample& sample : samples) {
    if (sample.token_id < 0 || sample.token_id >= config_.vocab_size) {
      return absl::InternalError(
          absl::StrCat("the backend sampled token ", sample.token_id, " outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

void EngineImpl::AppendChoice(int64_t seq_id, Sampler::Choice choice) {
  ActiveRequest& a = *active_.at(seq_id);
  if (a.completion_tokens == 0) {
    cached_prompt_tokens_ += scheduler_.CachedPromptTokens(seq_id);
    a.first_token_at = clock_.Now();
  }
  const int32_t token = choice.token_id;
  scheduler_.AppendToken(seq_id, token);
  ++a.completion_tokens;
  ++generation_tokens_;

  TokenEvent event;
  event.token_ids.push_back(token);
  event.logprobs.push_back(choice.logprob);
  if (a.request.top_logprobs > 0) event.top_logprobs.push_back(std::move(choice.top));

  StopStringMatcher::Result text = a.stop_matcher.Push(a.detokenizer.Push(token));
  event.text = std::move(text.text);
  const StoppingCriteria& stopping = a.request.stopping;
  std::optional<FinishReason> reason;
  if (text.stopped) {
    reason = FinishReason::kStopSequence;
  } else if (!stopping.ignore_eos && config_.IsEos(token)) {
    reason = FinishReason::kEos;
  } else if (std::find(stopping.stop_token_ids.begin(), stopping.stop_token_ids.end(), token) !=
             stopping.stop_token_ids.end()) {
    reason = FinishReason::kStopToken;
  } else if (static_cast<int64_t>(scheduler_.Tokens(seq_id).size()) >= a.max_total_tokens) {
    reason = FinishReason::kLength;
  }
  if (!reason.has_value()) {
    outbox_.emplace_back(a.sink, std::move(event));
    return;
  }
  if (*reason != FinishReason::kStopSequence) {
    // Release what the detokenizer and the stop matcher still hold; it may yet complete a stop.
    StopStringMatcher::Result tail = a.stop_matcher.Push(a.detokenizer.Finish());
    event.text += tail.text;
    if (tail.stopped) {
      reason = FinishReason::kStopSequence;
    } else {
      event.text += a.stop_matcher.Flush();
      // Flush may cut at a stop that an earlier, longer candidate was still hiding.
      if (a.stop_matcher.stopped()) reason = FinishReason::kStopSequence;
    }
  }
  Finish(seq_id, std::move(event), *reason);
}

void EngineImpl::Finish(int64_t seq_id, TokenEvent event, FinishReason reason) {
  auto it = active_.find(seq_id);
  if (it == active_.end()) return;
  std::unique_ptr<ActiveRequest> a = std::move(it->second);
  active_.erase(it);
  event.finished = true;
  event.finish_reason = reason;
  event.usage.prompt_tokens = static_cast<int32_t>(a->request.prompt_token_ids.size());
  event.usage.completion_tokens = a->completion_tokens;
  event.usage.cached_prompt_tokens = scheduler_.CachedPromptTokens(seq_id);
  const double now = clock_.Now();
  event.timings.queue_seconds = (a->admitted_at >= 0 ? a->admitted_at : now) - a->submitted_at;
  event.timings.time_to_first_token_seconds =
      a->first_token_at >= 0 ? a->first_token_at - a->submitted_at : 0;
  event.timings.total_seconds = now - a->submitted_at;
  scheduler_.Remove(seq_id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_ids_.erase(a->request.id);
  }
  outbox_.emplace_back(std::move(a->sink), std::move(event));
}

void EngineImpl::PublishStats(double step_seconds) {
  const KvCacheStats kv = kv_->Stats();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = scheduler_.num_running();
  stats_.waiting = scheduler_.num_waiting();
  stats_.kv_blocks_total = kv.total;
  stats_.kv_blocks_used = kv.used;
  stats_.kv_blocks_cached = kv.cached;
  stats_.prompt_tokens_processed = prompt_tokens_processed_;
  stats_.generation_tokens = generation_tokens_;
  stats_.cached_prompt_tokens = cached_prompt_tokens_;
  stats_.preemptions = scheduler_.num_preemptions();
  stats_.steps = steps_;
  stats_.last_step_seconds = step_seconds;
  stats_.total_step_seconds = total_step_seconds_;
}

absl::StatusOr<std::unique_ptr<EngineImpl>> MakeEngine(const EngineOptions& options,
                                                       const ModelConfig& config, Backend* backend,
                                                       const Tokenizer* tokenizer) {
  if (options.max_num_seqs < 1 || options.max_batched_tokens < 1 || options.max_waiting < 0) {
    return absl::InvalidArgumentError(
        "max_num_seqs and max_batched_tokens must be >= 1, max_waiting >= 0");
  }
  auto kv = KvCacheManager::Create(KvCacheManagerOptions{
      backend->num_blocks(), backend->block_size(), options.enable_prefix_caching});
  if (!kv.ok()) return kv.status();
  return std::make_unique<EngineImpl>(options, config, backend, tokenizer, *std::move(kv));
}

// An engine that owns its checkpoint, tokenizer and backend (Engine::Create).
absl::StatusOr<std::unique_ptr<Engine>> AdoptEngine(const EngineOptions& options,
                                                    const ModelConfig& config,
                                                    std::unique_ptr<Checkpoint> checkpoint,
                                                    std::unique_ptr<Tokenizer> tokenizer,
                                                    std::unique_ptr<Backend> backend) {
  auto engine = MakeEngine(options, config, backend.get(), tokenizer.get());
  if (!engine.ok()) return engine.status();
  (*engine)->checkpoint_ = std::move(checkpoint);
  (*engine)->owned_tokenizer_ = std::move(tokenizer);
  (*engine)->owned_backend_ = std::move(backend);
  return std::unique_ptr<Engine>(*std::move(engine));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::CreateForTest(const EngineOptions& options,
                                                              const ModelConfig& config,
                                                              Backend* backend,
                                                              const Tokenizer* tokenizer) {
  auto engine = MakeEngine(options, config, backend, tokenizer);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

absl::StatusOr<DType> ParseKvCacheDType(std::string_view name) {
  if (name == "float32" || name == "auto") return DType::kF32;
  if (name == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv-cache-dtype must be float32 or bfloat16, not '", std::string(name), "'"));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  // Tiled: the CPU backend reads its matrices in place (matrix_layout.h). A backend from a
  // factory says which layout it needs.
  auto checkpoint =
      Checkpoint::Open(options.model_dir,
                       options.backend_factory ? options.checkpoint_layout : MatrixLayout::kTiles);
  if (!checkpoint.ok()) return checkpoint.status();
  auto tokenizer = Tokenizer::Load(options.model_dir / "tokenizer.model");
  if (!tokenizer.ok()) return tokenizer.status();
  const ModelConfig& config = (*checkpoint)->config();
  if ((*tokenizer)->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        (options.model_dir / "tokenizer.model").string(), ": the tokenizer has ",
        (*tokenizer)->vocab_size(), " pieces but config.json vocab_size is ", config.vocab_size));
  }
  if (options.block_size < 1) return absl::InvalidArgumentError("block_size must be >= 1");
  if (options.backend_factory) {
    absl::StatusOr<std::unique_ptr<Backend>> backend = options.backend_factory(**checkpoint);
    if (!backend.ok()) return backend.status();
    if (*backend == nullptr) return absl::InternalError("the backend factory returned no backend");
    if ((*backend)->vocab_size() != config.vocab_size) {
      return absl::InternalError(
          absl::StrCat("the backend's vocabulary (", (*backend)->vocab_size(),
                       ") differs from config.json's (", config.vocab_size, ")"));
    }
    return AdoptEngine(options, config, *std::move(checkpoint), *std::move(tokenizer),
                       *std::move(backend));
  }

  // The KV pool: an explicit block count, else a byte budget, else room for max_num_seqs full
  // contexts, K and V in options.kv_cache_dtype.
  if (options.kv_cache_dtype != DType::kF32 && options.kv_cache_dtype != DType::kBF16) {
    return absl::InvalidArgumentError("kv_cache_dtype must be float32 or bfloat16");
  }
  const int64_t block_bytes =
      options.block_size * cpu::KvCache::BytesPerPosition(config.num_hidden_layers,
                                                          config.num_key_value_heads,
                                                          config.head_dim, options.kv_cache_dtype);
  int64_t blocks = options.num_kv_blocks;
  if (blocks <= 0 && options.kv_cache_bytes > 0) blocks = options.kv_cache_bytes / block_bytes;
  if (blocks <= 0) {
    blocks = static_cast<int64_t>(std::max(1, options.max_num_seqs)) *
             ((config.max_position_embeddings + options.block_size - 1) / options.block_size);
  }
  if (blocks < 1 || blocks > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache budget gives ", blocks, " blocks of ", block_bytes, " bytes"));
  }
  auto backend = CpuBackend::Create(**checkpoint, CpuBackendOptions{
                                                      .num_threads = options.num_threads,
                                                      .block_size = options.block_size,
                                                      .num_blocks = static_cast<int32_t>(blocks),
                                                      .kv_cache_dtype = options.kv_cache_dtype,
                                                  });
  if (!backend.ok()) return backend.status();
  return AdoptEngine(options, config, *std::move(checkpoint), *std::move(tokenizer),
                     *std::move(backend));
}

}  // namespace vg::engine
