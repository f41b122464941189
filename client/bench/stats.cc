#include "client/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace vg::client {

std::optional<double> RequestRecord::tpot_s() const {
  if (!ttft_s.has_value() || output_tokens < 2) return std::nullopt;
  return (e2e_s - *ttft_s) / static_cast<double>(output_tokens - 1);
}

double Percentile(const std::vector<double>& sorted, double q) {
  const double rank = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double fraction = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * fraction;
}

LatencySummary Summarize(std::vector<double> values) {
  LatencySummary s;
  s.count = values.size();
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  s.min = values.front();
  s.max = values.back();
  s.p50 = Percentile(values, 0.50);
  s.p90 = Percentile(values, 0.90);
  s.p95 = Percentile(values, 0.95);
  s.p99 = Percentile(values, 0.99);
  return s;
}

StageStats ComputeStageStats(LoadKind kind, double load_value, double duration_s,
                             const std::vector<RequestRecord>& records,
                             std::optional<double> slo_ttft_s, std::optional<double> slo_tpot_s) {
  StageStats st;
  st.kind = kind;
  st.load_value = load_value;
  st.duration_s = duration_s;
  std::vector<double> ttft, itl, tpot, e2e;
  int64_t good = 0;
  for (const RequestRecord& r : records) {
    if (r.cancelled_at_end) {
      ++st.cancelled_at_end;
      continue;
    }
    if (!r.completed()) {
      ++st.failed;
      ++st.errors[r.status];
      continue;
    }
    ++st.completed;
    st.prompt_tokens += r.prompt_tokens;
    st.output_tokens += r.output_tokens;
    st.cached_prompt_tokens += r.cached_prompt_tokens;
    if (r.ttft_s.has_value()) ttft.push_back(*r.ttft_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    const std::optional<double> t = r.tpot_s();
    if (t.has_value()) tpot.push_back(*t);
    e2e.push_back(r.e2e_s);
    // A request without a first token cannot meet a TTFT SLO; without a TPOT it meets that one.
    const bool ttft_ok =
        !slo_ttft_s.has_value() || (r.ttft_s.has_value() && *r.ttft_s <= *slo_ttft_s);
    const bool tpot_ok = !slo_tpot_s.has_value() || !t.has_value() || *t <= *slo_tpot_s;
    if (ttft_ok && tpot_ok) ++good;
  }
  st.request_throughput = static_cast<double>(st.completed) / duration_s;
  st.output_token_throughput = static_cast<double>(st.output_tokens) / duration_s;
  st.total_token_throughput = static_cast<double>(st.prompt_tokens + st.output_tokens) / duration_s;
  if (slo_ttft_s.has_value() || slo_tpot_s.has_value()) {
    st.goodput = Goodput{slo_ttft_s, slo_tpot_s, good, static_cast<double>(good) / duration_s};
  }
  st.ttft_s = Summarize(std::move(ttft));
  st.itl_s = Summarize(std::move(itl));
  st.tpot_s = Summarize(std::move(tpot));
  st.e2e_s = Summarize(std::move(e2e));
  return st;
}

}  // namespace vg::client
