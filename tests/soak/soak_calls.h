// The soak's calls and their judging: what each call was meant to do (Kind), how it ended
// (Outcome), the thread-safe Tally of both, the overload-burst window in which refusals are
// expected, and RunStream/Judge for one Generate stream. Used by soak_test.cc only.
#ifndef VG_TESTS_SOAK_SOAK_CALLS_H_
#define VG_TESTS_SOAK_SOAK_CALLS_H_

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server::soak {

namespace pb = ::vaultgemma::v1;
using Clock = std::chrono::steady_clock;

constexpr int kContext = 128;  // the fixture's max_position_embeddings

// What a call was meant to do; its outcome is judged against that.
enum class Kind {
  kGreedy,
  kSeeded,
  kSampled,
  kStops,
  kTokenIds,
  kCancel,
  kAbandon,
  kShortDeadline,
  kInvalid,
  kBurst,
  kTokenize,
  kModelInfo,
  kHealth,
  kMetrics,
  kCount
};
constexpr std::array<const char*, static_cast<int>(Kind::kCount)> kKindNames = {
    "greedy",   "seeded",  "sampled", "stops",    "token_ids",  "cancel", "abandon",
    "deadline", "invalid", "burst",   "tokenize", "model_info", "health", "metrics"};

enum class Outcome { kOk, kRefused, kCancelled, kDeadline, kInvalid, kError, kCount };
constexpr std::array<const char*, static_cast<int>(Outcome::kCount)> kOutcomeNames = {
    "ok", "refused", "cancelled", "deadline", "invalid", "ERROR"};

// Outcome counts, tokens, the first errors, and the reference output of each repeatable request.
// Thread-safe.
class Tally {
 public:
  Tally() : start_(Clock::now()) {}
  // `error`: what went wrong, for kError; its first 40 characters group the errors.
  void Record(Kind kind, Outcome outcome, const std::string& error = "");
  void AddTokens(int64_t n) { tokens_.fetch_add(n); }
  // False (and an error recorded by the caller) when `key` gave other tokens before.
  bool SameAsBefore(const std::string& key, const std::vector<uint32_t>& tokens);

  int64_t Count(Kind kind, Outcome outcome);
  int64_t CountOutcome(Outcome outcome);
  int64_t requests();
  int64_t errors();
  int64_t repeats_checked();
  std::vector<std::string> first_errors();
  std::map<std::string, int64_t> error_groups();
  int64_t tokens() const { return tokens_.load(); }

 private:
  const Clock::time_point start_;
  std::mutex mu_;
  std::map<std::string, int64_t> error_groups_;
  std::array<std::array<int64_t, static_cast<int>(Outcome::kCount)>, static_cast<int>(Kind::kCount)>
      counts_{};
  int64_t requests_ = 0, errors_ = 0, repeats_checked_ = 0;
  std::vector<std::string> first_errors_;
  std::map<std::string, std::vector<uint32_t>> references_;
  std::atomic<int64_t> tokens_{0};
};

// Whether an overload burst is in flight (or just ended: its streams release their places a moment
// after their clients have the status), when any request may be refused with "queue is full".
class BurstWindow {
 public:
  void Begin() { active_.fetch_add(1); }
  void End() {
    ended_ms_.store(NowMs());
    active_.fetch_sub(1);
  }
  bool Open() const { return active_.load() > 0 || NowMs() - ended_ms_.load() < 2000; }
  double SecondsSinceEnd() const { return (NowMs() - ended_ms_.load()) / 1000.0; }

 private:
  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
        .count();
  }
  std::atomic<int> active_{0};
  std::atomic<int64_t> ended_ms_{-1000000};
};

struct StreamResult {
  grpc::Status status;
  bool abandoned = false;
  bool cancelled = false;  // the client called TryCancel: an OK status then is a race it lost
  std::vector<uint32_t> token_ids;
  std::string text;
  int logprobs = 0;
  bool tops_ok = true;
  pb::FinishReason reason = pb::FINISH_REASON_UNSPECIFIED;
  pb::Usage usage;
};

// Runs a Generate stream. With `stop_after` >= 0 the client stops after that many messages: it
// cancels (TryCancel, then Finish), or with `abandon` simply drops the call.
StreamResult RunStream(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                       std::chrono::milliseconds deadline, int stop_after = -1,
                       bool abandon = false);

// "" when an OK stream's output is consistent with its request, else what is wrong.
std::string CheckCompleted(const pb::GenerateRequest& request, const StreamResult& result);

// Classifies a Generate call by what the client meant, records it, and returns the outcome.
// With `check_repeat`, an OK call's tokens must equal those of the first identical request.
Outcome Judge(Tally& tally, const BurstWindow& bursts, Kind kind,
              const pb::GenerateRequest& request, const StreamResult& result, bool check_repeat);

}  // namespace vg::server::soak

#endif  // VG_TESTS_SOAK_SOAK_CALLS_H_
