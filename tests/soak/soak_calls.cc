#include "tests/soak/soak_calls.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace vg::server::soak {

void Tally::Record(Kind kind, Outcome outcome, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[static_cast<int>(kind)][static_cast<int>(outcome)];
  ++requests_;
  if (outcome == Outcome::kError) {
    ++errors_;
    ++error_groups_[error.substr(0, 40)];
    if (first_errors_.size() < 10) {
      char when[32];
      std::snprintf(when, sizeof(when), "t=%.1fs ",
                    std::chrono::duration<double>(Clock::now() - start_).count());
      first_errors_.push_back(when + std::string(kKindNames[static_cast<int>(kind)]) + ": " +
                              error);
    }
  }
}

bool Tally::SameAsBefore(const std::string& key, const std::vector<uint32_t>& tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = references_.emplace(key, tokens);
  if (inserted) return true;
  ++repeats_checked_;
  return it->second == tokens;
}

int64_t Tally::Count(Kind kind, Outcome outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_[static_cast<int>(kind)][static_cast<int>(outcome)];
}

int64_t Tally::CountOutcome(Outcome outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t total = 0;
  for (const auto& row : counts_) total += row[static_cast<int>(outcome)];
  return total;
}

int64_t Tally::requests() {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

int64_t Tally::errors() {
  std::lock_guard<std::mutex> lock(mu_);
  return errors_;
}

int64_t Tally::repeats_checked() {
  std::lock_guard<std::mutex> lock(mu_);
  return repeats_checked_;
}

std::vector<std::string> Tally::first_errors() {
  std::lock_guard<std::mutex> lock(mu_);
  return first_errors_;
}

std::map<std::string, int64_t> Tally::error_groups() {
  std::lock_guard<std::mutex> lock(mu_);
  return error_groups_;
}

StreamResult RunStream(pb::TextGeneration::Stub& stub, const pb::GenerateRequest& request,
                       std::chrono::milliseconds deadline, int stop_after, bool abandon) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  StreamResult result;
  auto reader = stub.Generate(&context, request);
  pb::GenerateResponse message;
  int messages = 0;
  while (reader->Read(&message)) {
    result.token_ids.insert(result.token_ids.end(), message.token_ids().begin(),
                            message.token_ids().end());
    result.text += message.text();
    result.logprobs += message.logprobs_size();
    for (const pb::TokenLogprobs& logprobs : message.logprobs()) {
      if (logprobs.top_size() != static_cast<int>(request.top_logprobs())) result.tops_ok = false;
    }
    if (message.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
      result.reason = message.finish_reason();
      result.usage = message.usage();
    }
    if (stop_after >= 0 && ++messages >= stop_after) {
      if (abandon) {
        result.abandoned = true;
        return result;  // the reader, then the context go: the call is cancelled
      }
      context.TryCancel();
      result.cancelled = true;
      break;
    }
  }
  result.status = reader->Finish();
  return result;
}

std::string CheckCompleted(const pb::GenerateRequest& request, const StreamResult& result) {
  std::ostringstream problem;
  const size_t n = result.token_ids.size();
  const uint32_t max_new =
      request.stopping().has_max_new_tokens() ? request.stopping().max_new_tokens() : 64;
  const bool stops =
      request.stopping().stop_size() > 0 || request.stopping().stop_token_ids_size() > 0;
  if (result.reason == pb::FINISH_REASON_UNSPECIFIED) problem << "no finish reason; ";
  if (result.usage.completion_tokens() != n) {
    problem << "usage says " << result.usage.completion_tokens() << " tokens, got " << n << "; ";
  }
  if (result.logprobs != static_cast<int>(n)) problem << result.logprobs << " logprobs; ";
  if (!result.tops_ok) problem << "wrong number of top logprobs; ";
  if (n > max_new) problem << n << " tokens > max_new_tokens " << max_new << "; ";
  if (request.stopping().ignore_eos() && !stops) {
    if (result.reason != pb::FINISH_REASON_LENGTH) problem << "not LENGTH; ";
    if (result.usage.prompt_tokens() + max_new <= kContext && n != max_new) {
      problem << n << " tokens, expected " << max_new << "; ";
    }
  }
  for (const std::string& stop : request.stopping().stop()) {
    if (result.text.find(stop) != std::string::npos) problem << "stop string emitted; ";
  }
  if (result.reason == pb::FINISH_REASON_STOP_TOKEN) {
    const auto& ids = request.stopping().stop_token_ids();
    if (n == 0 || std::find(ids.begin(), ids.end(), result.token_ids.back()) == ids.end()) {
      problem << "STOP_TOKEN without a stop token last; ";
    }
  }
  return problem.str();
}

Outcome Judge(Tally& tally, const BurstWindow& bursts, Kind kind,
              const pb::GenerateRequest& request, const StreamResult& result, bool check_repeat) {
  tally.AddTokens(static_cast<int64_t>(result.token_ids.size()));
  if (result.abandoned) {
    tally.Record(kind, Outcome::kCancelled);
    return Outcome::kCancelled;
  }
  const grpc::StatusCode code = result.status.error_code();
  const std::string what = std::to_string(code) + " " + result.status.error_message();
  Outcome outcome = Outcome::kError;
  std::string error = "status " + what;
  if (code == grpc::StatusCode::OK && result.cancelled) {
    outcome = Outcome::kOk;  // finished before the cancel arrived; the rest was not read
  } else if (code == grpc::StatusCode::OK) {
    error = kind == Kind::kInvalid ? "invalid request accepted" : CheckCompleted(request, result);
    if (error.empty()) outcome = Outcome::kOk;
    if (outcome == Outcome::kOk && check_repeat) {
      pb::GenerateRequest key = request;
      key.clear_request_id();
      key.clear_top_logprobs();  // reporting logprobs must not change a token
      if (!tally.SameAsBefore(key.SerializeAsString(), result.token_ids)) {
        outcome = Outcome::kError;
        error = "repeated request gave other tokens";
      }
    }
  } else if (code == grpc::StatusCode::CANCELLED && kind == Kind::kCancel) {
    outcome = Outcome::kCancelled;
  } else if (code == grpc::StatusCode::DEADLINE_EXCEEDED && kind == Kind::kShortDeadline) {
    outcome = Outcome::kDeadline;
  } else if (code == grpc::StatusCode::INVALID_ARGUMENT && kind == Kind::kInvalid) {
    outcome = Outcome::kInvalid;
  } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED &&
             result.status.error_message().find("queue is full") != std::string::npos &&
             (kind == Kind::kBurst || bursts.Open())) {
    outcome = Outcome::kRefused;
  } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    char when[64];
    std::snprintf(when, sizeof(when), " (%.1f s after the last burst)", bursts.SecondsSinceEnd());
    error += when;
  }
  tally.Record(kind, outcome, error);
  return outcome;
}

}  // namespace vg::server::soak
