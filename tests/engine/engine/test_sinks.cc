#include "tests/engine/engine/test_sinks.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/sampling/row_sampler.h"
#include "gtest/gtest.h"

namespace vg::engine::testing {

void CollectingSink::OnEvent(TokenEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  ++result_.events;
  result_.token_ids.insert(result_.token_ids.end(), event.token_ids.begin(), event.token_ids.end());
  result_.logprobs.insert(result_.logprobs.end(), event.logprobs.begin(), event.logprobs.end());
  for (auto& top : event.top_logprobs) result_.top_logprobs.push_back(top);
  result_.text += event.text;
  if (event.finished) {
    finished_ = true;
    result_.finish_reason = event.finish_reason;
    result_.usage = event.usage;
    result_.status = event.status;
    result_.timings = event.timings;
    cv_.notify_all();
  }
}

CollectingSink::Result CollectingSink::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return finished_; });
  return result_;
}

bool CollectingSink::finished() {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

int CollectingSink::events() {
  std::lock_guard<std::mutex> lock(mu_);
  return result_.events;
}

FakeBackend::FakeBackend(int32_t num_blocks, int32_t block_size, int64_t vocab_size)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      vocab_size_(vocab_size),
      slots_(static_cast<size_t>(num_blocks) * block_size, -1) {}

absl::Status FakeBackend::Forward(const BatchPlan& plan, Logits* logits) {
  ++forward_calls;
  if (on_forward) on_forward();
  if (static_cast<int64_t>(plan.entries.size()) > max_entries) max_entries = plan.entries.size();
  if (step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_delay_ms));
  if (fail) return absl::InternalError("injected backend failure");
  auto slot = [&](const BatchEntry& e, int64_t pos) -> int32_t* {
    const size_t block_index = static_cast<size_t>(pos / block_size_);
    if (block_index >= e.block_table.size()) return nullptr;
    const int32_t block = e.block_table[block_index];
    if (block < 0 || block >= num_blocks_) return nullptr;
    return &slots_[static_cast<size_t>(block) * block_size_ + pos % block_size_];
  };
  for (const BatchEntry& e : plan.entries) {
    for (size_t i = 0; i < e.token_ids.size(); ++i) {
      int32_t* s = slot(e, e.start_position + static_cast<int64_t>(i));
      if (s == nullptr) return absl::InvalidArgumentError("block table too short");
      *s = e.token_ids[i];
    }
  }
  logits->vocab_size = vocab_size_;
  logits->values.clear();
  logits->row_entry.clear();
  for (size_t index = 0; index < plan.entries.size(); ++index) {
    const BatchEntry& e = plan.entries[index];
    if (e.logits == LogitsMode::kNone) continue;
    const int64_t last = e.start_position + static_cast<int64_t>(e.token_ids.size()) - 1;
    const int64_t first = e.logits == LogitsMode::kAll ? e.start_position : last;
    for (int64_t p = first; p <= last; ++p) {
      uint64_t h = 1469598103934665603ull;
      for (int64_t q = 0; q <= p; ++q) {
        const int32_t* s = slot(e, q);
        if (s == nullptr || *s < 0) {
          return absl::InternalError(absl::StrCat("position ", q, " was never written"));
        }
        h = (h ^ static_cast<uint64_t>(*s)) * 1099511628211ull;
      }
      for (int64_t v = 0; v < vocab_size_; ++v) {
        const uint64_t x =
            (h ^ (static_cast<uint64_t>(v) * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
        logits->values.push_back(static_cast<float>((x >> 40) % 1000) / 100.0f);
      }
      logits->row_entry.push_back(static_cast<int32_t>(index));
    }
  }
  return absl::OkStatus();
}

absl::Status DeviceSamplingFakeBackend::ForwardAndSample(const BatchPlan& plan,
                                                         std::span<const RowSampling> rows,
                                                         std::vector<RowSample>* samples) {
  ++forward_and_sample_calls;
  size_t last_rows = 0;
  for (const BatchEntry& e : plan.entries) {
    if (e.logits == LogitsMode::kAll) return absl::InvalidArgumentError("kAll entry");
    if (e.logits == LogitsMode::kLast) ++last_rows;
  }
  if (rows.size() != last_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(rows.size(), " row samplings for ", last_rows, " kLast entries"));
  }
  Logits logits;
  if (absl::Status s = Forward(plan, &logits); !s.ok()) return s;
  samples->clear();
  for (size_t r = 0; r < rows.size(); ++r) {
    samples->push_back(SampleRow(logits.Row(static_cast<int64_t>(r)), rows[r]));
    samples->back().token_id += token_offset;
  }
  sampled_rows += static_cast<int64_t>(rows.size());
  return absl::OkStatus();
}

std::unique_ptr<Tokenizer> LoadTokenizer() {
  auto t = Tokenizer::Load(std::string(VG_SOURCE_DIR) +
                           "/tests/fixtures/tokenizers/gemma_bpe_700.model");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

std::vector<int32_t> Prompt(int32_t n, int32_t salt) {
  std::vector<int32_t> out = {2};
  for (int32_t i = 1; i < n; ++i) out.push_back(10 + (i * 31 + salt * 7) % 600);
  return out;
}

Request MakeRequest(const std::string& id, std::vector<int32_t> prompt, int32_t max_new) {
  Request r;
  r.id = id;
  r.prompt_token_ids = std::move(prompt);
  r.stopping.max_new_tokens = max_new;
  r.stopping.ignore_eos = true;
  return r;
}

std::vector<CollectingSink::Result> RunAll(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const Request& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    EXPECT_TRUE(engine.Submit(r, sinks.back()).ok());
  }
  std::vector<CollectingSink::Result> out;
  for (auto& s : sinks) out.push_back(s->Wait());
  return out;
}

}  // namespace vg::engine::testing
