#include "client/bench/options.h"

#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/runner/command_line.h"

namespace vg::client {
namespace {

using engine::CommandLine;
using engine::FlagSpec;

constexpr FlagSpec kFlags[] = {
    {"server"},
    {"tls-ca"},
    {"auth-token"},
    {"deadline"},
    {"concurrency"},
    {"request-rate"},
    {"max-concurrency"},
    {"num-requests"},
    {"duration"},
    {"warmup-requests"},
    {"dataset"},
    {"input-len"},
    {"output-len"},
    {"len-distribution"},
    {"input-len-range"},
    {"output-len-range"},
    {"seed"},
    {"cache-salt"},
    {"slo-ttft"},
    {"slo-tpot"},
    {"out"},
    {"fail-on-error", false},
    {"help", false},
};

absl::Status Invalid(absl::string_view flag, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", what));
}

// "1,4,16" -> {1, 4, 16}; each a positive integer.
absl::StatusOr<std::vector<double>> ParseConcurrencyList(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int value;
    if (!absl::SimpleAtoi(part, &value) || value < 1 || value > 100000) {
      return Invalid(
          "concurrency",
          absl::StrCat("needs integers in [1, 100000] joined by commas, got '", text, "'"));
    }
    out.push_back(value);
  }
  return out;
}

// "0.5,2,inf" -> {0.5, 2, +inf}; each positive.
absl::StatusOr<std::vector<double>> ParseRateList(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double value;
    if (part == "inf") {
      value = std::numeric_limits<double>::infinity();
    } else if (!absl::SimpleAtod(part, &value) || !std::isfinite(value) || value <= 0) {
      return Invalid(
          "request-rate",
          absl::StrCat("needs positive numbers or 'inf' joined by commas, got '", text, "'"));
    }
    out.push_back(value);
  }
  return out;
}

// "MIN:MAX" -> {min, max} with 1 <= min <= mean <= max.
absl::Status ParseRange(const CommandLine& cl, const std::string& flag, LengthSpec* spec) {
  const std::string text = *cl.GetString(flag);
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int lo, hi;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &lo) || !absl::SimpleAtoi(parts[1], &hi) ||
      lo < 1 || lo > spec->mean || hi < spec->mean) {
    return Invalid(flag, absl::StrCat("must be MIN:MAX with 1 <= MIN <= ", spec->mean,
                                      " <= MAX, got '", text, "'"));
  }
  spec->min = lo;
  spec->max = hi;
  return absl::OkStatus();
}

absl::StatusOr<double> PositiveDouble(const CommandLine& cl, const std::string& flag) {
  auto value = cl.GetDouble(flag, 0);
  if (!value.ok()) return value.status();
  if (*value <= 0) return Invalid(flag, "must be a number > 0");
  return *value;
}

absl::Status ParseLoad(const CommandLine& cl, BenchOptions* o) {
  if (cl.Has("concurrency") && cl.Has("request-rate")) {
    return Invalid("request-rate", "cannot be combined with --concurrency");
  }
  if (cl.Has("request-rate")) {
    auto rates = ParseRateList(*cl.GetString("request-rate"));
    if (!rates.ok()) return rates.status();
    o->load_kind = LoadKind::kRequestRate;
    o->load_values = *rates;
  } else if (cl.Has("concurrency")) {
    auto levels = ParseConcurrencyList(*cl.GetString("concurrency"));
    if (!levels.ok()) return levels.status();
    o->load_values = *levels;
  }
  if (cl.Has("max-concurrency")) {
    if (o->load_kind != LoadKind::kRequestRate) {
      return Invalid("max-concurrency", "applies to --request-rate only");
    }
    auto n = cl.GetInt("max-concurrency", 0, 1, 100000);
    if (!n.ok()) return n.status();
    o->max_concurrency = static_cast<int>(*n);
  }
  if (cl.Has("num-requests")) {
    auto n = cl.GetInt("num-requests", 0, 1, int64_t{1} << 40);
    if (!n.ok()) return n.status();
    o->num_requests = *n;
  }
  if (cl.Has("duration")) {
    auto d = PositiveDouble(cl, "duration");
    if (!d.ok()) return d.status();
    o->duration_s = *d;
  }
  if (!o->num_requests.has_value() && !o->duration_s.has_value()) o->num_requests = 100;
  bool has_inf = false;
  for (double v : o->load_values) {
    has_inf |= o->load_kind == LoadKind::kRequestRate && std::isinf(v);
  }
  if (has_inf && !o->num_requests.has_value() && !o->max_concurrency.has_value()) {
    return Invalid("request-rate",
                   "inf with only --duration needs --num-requests or "
                   "--max-concurrency, or it would send without end");
  }
  auto warmup = cl.GetInt("warmup-requests", o->warmup_requests, 0, 100000);
  if (!warmup.ok()) return warmup.status();
  o->warmup_requests = static_cast<int>(*warmup);
  return absl::OkStatus();
}

absl::Status ParseWorkload(const CommandLine& cl, BenchOptions* o) {
  o->dataset = cl.GetString("dataset").value_or("");
  const std::string dist = cl.GetString("len-distribution").value_or("fixed");
  if (dist == "fixed") {
    o->len_distribution = LengthDistribution::kFixed;
  } else if (dist == "uniform") {
    o->len_distribution = LengthDistribution::kUniform;
  } else if (dist == "normal") {
    o->len_distribution = LengthDistribution::kNormal;
  } else {
    return Invalid("len-distribution",
                   absl::StrCat("must be fixed, uniform or normal, got '", dist, "'"));
  }
  for (const char* flag : {"input-len", "output-len"}) {
    const bool input = std::string(flag) == "input-len";
    LengthSpec* spec = input ? &o->input_len : &o->output_len;
    auto mean = cl.GetInt(flag, spec->mean, 1, 1 << 24);
    if (!mean.ok()) return mean.status();
    spec->mean = static_cast<int>(*mean);
    // Without a range, uniform and normal spread over [mean/2, 3*mean/2].
    spec->min = spec->max = spec->mean;
    if (o->len_distribution != LengthDistribution::kFixed) {
      spec->min = std::max(1, spec->mean / 2);
      spec->max = spec->mean + spec->mean / 2;
    }
    const std::string range_flag = std::string(flag) + "-range";
    if (cl.Has(range_flag)) {
      if (o->len_distribution == LengthDistribution::kFixed) {
        return Invalid(range_flag, "needs --len-distribution uniform or normal");
      }
      if (absl::Status s = ParseRange(cl, range_flag, spec); !s.ok()) return s;
    }
  }
  if (!o->dataset.empty()) {
    for (const char* flag : {"input-len", "input-len-range", "len-distribution"}) {
      if (cl.Has(flag)) return Invalid(flag, "cannot be combined with --dataset");
    }
  }
  auto seed = cl.GetUint64("seed", 0);
  if (!seed.ok()) return seed.status();
  o->seed = *seed;
  o->cache_salt = cl.GetString("cache-salt").value_or("");
  return absl::OkStatus();
}

}  // namespace

const char* LoadKindName(LoadKind kind) {
  return kind == LoadKind::kConcurrency ? "concurrency" : "request_rate";
}

const char* LengthDistributionName(LengthDistribution distribution) {
  switch (distribution) {
    case LengthDistribution::kUniform:
      return "uniform";
    case LengthDistribution::kNormal:
      return "normal";
    default:
      return "fixed";
  }
}

absl::StatusOr<BenchOptions> ParseBenchOptions(int argc, const char* const* argv) {
  auto cl = CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok()) return cl.status();
  BenchOptions o;
  if (cl->Has("help")) {
    o.help = true;
    return o;
  }
  o.connection.server = cl->GetString("server").value_or(o.connection.server);
  o.connection.tls_ca_file = cl->GetString("tls-ca").value_or("");
  o.connection.auth_token = cl->GetString("auth-token").value_or("");
  auto deadline = cl->GetDouble("deadline", 0);
  if (!deadline.ok()) return deadline.status();
  if (*deadline < 0) return Invalid("deadline", "must be a number >= 0");
  o.deadline_s = *deadline;
  if (absl::Status s = ParseLoad(*cl, &o); !s.ok()) return s;
  if (absl::Status s = ParseWorkload(*cl, &o); !s.ok()) return s;
  for (const char* flag : {"slo-ttft", "slo-tpot"}) {
    if (!cl->Has(flag)) continue;
    auto v = PositiveDouble(*cl, flag);
    if (!v.ok()) return v.status();
    (std::string(flag) == "slo-ttft" ? o.slo_ttft_s : o.slo_tpot_s) = *v;
  }
  o.out_dir = cl->GetString("out").value_or("");
  o.fail_on_error = cl->Has("fail-on-error");
  return o;
}

}  // namespace vg::client

namespace vg::client {

const char kBenchUsage[] = R"(usage: vaultgemma-bench [flags]

Load-tests a running vaultgemma-server with streaming Generate calls and reports time to first
token, inter-token latency, time per output token, end-to-end latency and throughput.

Connection:
  --server ADDR          host:port, dns:///host:port, or ip:port,ip:port,... (round-robin);
                         default localhost:50051
  --tls-ca FILE          PEM roots to verify the server (TLS); default plaintext
  --auth-token TOKEN     bearer token
  --deadline SECONDS     per-request deadline (DEADLINE_EXCEEDED counts as an error); default none

Load (a comma list runs one stage per value, in order):
  --concurrency N[,N...]       closed loop: N requests always in flight (default 1)
  --request-rate R[,R...]      open loop: Poisson arrivals at R requests/s; 'inf' = all at once
  --max-concurrency N          with --request-rate: at most N in flight (arrivals wait)
  --num-requests N             requests per stage (default 100 when --duration is absent)
  --duration SECONDS           stage length; in-flight requests are then cancelled and reported
                               as cancelled_at_end, not as errors
  --warmup-requests N          sent once before the first stage, up to 4 at a time, not
                               measured (default 2)

Prompts (synthetic by default: random token ids from the model's vocabulary, ignore_eos set):
  --input-len N  --output-len N   prompt and output tokens (default 128 each)
  --len-distribution fixed|uniform|normal   (default fixed)
  --input-len-range MIN:MAX  --output-len-range MIN:MAX
                               bounds for uniform/normal (default [N/2, 3N/2]); normal has mean
                               N and standard deviation (MAX-MIN)/4, redrawn until inside
  --dataset FILE.jsonl         text prompts instead: {"prompt": "...", "max_new_tokens": N} per
                               line (max_new_tokens optional, default --output-len)
  --seed S                     prompts and arrivals repeat for a seed (default 0)
  --cache-salt SALT            one prefix-cache salt for all requests; default: a unique salt per
                               request, so no request reuses another's cached prefix

Reporting:
  --slo-ttft SECONDS  --slo-tpot SECONDS   goodput: completed requests/s within both
  --out DIR            write results.json, requests.csv and SVG charts there
  --fail-on-error      exit 1 if any request failed (for CI)

Exit codes: 0 run completed (server errors are counted), 1 --fail-on-error and a request failed,
2 usage, 3 server unreachable or GetModelInfo failed, 4 cannot write --out, 130 interrupted.
)";

}  // namespace vg::client
