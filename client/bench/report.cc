#include "client/bench/report.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace vg::client {
namespace {

using nlohmann::json;

json LoadValueJson(double v) { return std::isinf(v) ? json("inf") : json(v); }

json SummaryJson(const LatencySummary& s) {
  if (s.count == 0) {
    return {{"count", 0},     {"mean", nullptr}, {"min", nullptr}, {"max", nullptr},
            {"p50", nullptr}, {"p90", nullptr},  {"p95", nullptr}, {"p99", nullptr}};
  }
  return {{"count", s.count}, {"mean", s.mean}, {"min", s.min}, {"max", s.max},
          {"p50", s.p50},     {"p90", s.p90},   {"p95", s.p95}, {"p99", s.p99}};
}

json OptionalJson(const std::optional<double>& v) { return v.has_value() ? json(*v) : json(); }

json ConfigJson(const BenchOptions& o) {
  json loads = json::array();
  for (double v : o.load_values) loads.push_back(LoadValueJson(v));
  auto length = [&](const LengthSpec& s) {
    return json{{"mean", s.mean}, {"min", s.min}, {"max", s.max}};
  };
  return {
      {"server", o.connection.server},
      {"tls_ca_file", o.connection.tls_ca_file},
      {"auth_token_set", !o.connection.auth_token.empty()},  // never the token itself
      {"deadline_s", o.deadline_s > 0 ? json(o.deadline_s) : json()},
      {"load_kind", LoadKindName(o.load_kind)},
      {"load_values", loads},
      {"max_concurrency", o.max_concurrency.has_value() ? json(*o.max_concurrency) : json()},
      {"num_requests", o.num_requests.has_value() ? json(*o.num_requests) : json()},
      {"duration_s", OptionalJson(o.duration_s)},
      {"warmup_requests", o.warmup_requests},
      {"dataset", o.dataset.empty() ? json() : json(o.dataset)},
      {"len_distribution", LengthDistributionName(o.len_distribution)},
      {"input_len", length(o.input_len)},
      {"output_len", length(o.output_len)},
      {"ignore_eos", true},
      {"seed", o.seed},
      {"cache_salt", o.cache_salt.empty() ? json("per-request") : json(o.cache_salt)},
      {"slo_ttft_s", OptionalJson(o.slo_ttft_s)},
      {"slo_tpot_s", OptionalJson(o.slo_tpot_s)},
      {"out_dir", o.out_dir},
      {"fail_on_error", o.fail_on_error},
  };
}

json StageJson(const StageStats& st) {
  json goodput;
  if (st.goodput.has_value()) {
    goodput = {{"slo_ttft_s", OptionalJson(st.goodput->slo_ttft_s)},
               {"slo_tpot_s", OptionalJson(st.goodput->slo_tpot_s)},
               {"good_requests", st.goodput->good_requests},
               {"request_goodput", st.goodput->request_goodput}};
  }
  return {{"load", {{"kind", LoadKindName(st.kind)}, {"value", LoadValueJson(st.load_value)}}},
          {"label", StageLabel(st.kind, st.load_value)},
          {"duration_s", st.duration_s},
          {"completed", st.completed},
          {"failed", st.failed},
          {"cancelled_at_end", st.cancelled_at_end},
          {"errors", st.errors},
          {"request_throughput", st.request_throughput},
          {"output_token_throughput", st.output_token_throughput},
          {"total_token_throughput", st.total_token_throughput},
          {"prompt_tokens", st.prompt_tokens},
          {"output_tokens", st.output_tokens},
          {"cached_prompt_tokens", st.cached_prompt_tokens},
          {"goodput", goodput},
          {"ttft_s", SummaryJson(st.ttft_s)},
          {"itl_s", SummaryJson(st.itl_s)},
          {"tpot_s", SummaryJson(st.tpot_s)},
          {"e2e_s", SummaryJson(st.e2e_s)}};
}

std::string Ms(const LatencySummary& s, double value) {
  return s.count == 0 ? "-" : absl::StrFormat("%.2f", value * 1e3);
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string Seconds(double v) { return absl::StrFormat("%.6f", v); }

}  // namespace

std::string StageLabel(LoadKind kind, double value) {
  if (kind == LoadKind::kConcurrency) return absl::StrCat("concurrency ", value);
  if (std::isinf(value)) return "rate inf";
  return absl::StrCat("rate ", value, " req/s");
}

std::string FormatTable(const RunReport& r) {
  std::string out =
      absl::StrFormat("vaultgemma-bench: %s  model %s (%s, %s, vocab %d, context %d)\n",
                      r.options.connection.server, r.model.model_id, r.model.dtype, r.model.device,
                      r.model.vocab_size, r.model.context_length);
  auto row = [&](const std::string& name, const std::string& value) {
    absl::StrAppendFormat(&out, "%-42s %s\n", name, value);
  };
  for (size_t i = 0; i < r.stages.size(); ++i) {
    const StageStats& st = r.stages[i];
    absl::StrAppendFormat(&out, "\n=== stage %d/%d: %s ===\n", i + 1, r.stages.size(),
                          StageLabel(st.kind, st.load_value));
    row("Duration (s):", absl::StrFormat("%.2f", st.duration_s));
    row("Completed / failed / cancelled at end:",
        absl::StrCat(st.completed, " / ", st.failed, " / ", st.cancelled_at_end));
    std::vector<std::string> errors;
    for (const auto& entry : st.errors) {
      errors.push_back(absl::StrCat(entry.first, " ", entry.second));
    }
    row("Errors:", errors.empty() ? "none" : absl::StrJoin(errors, ", "));
    row("Request throughput (req/s):", absl::StrFormat("%.2f", st.request_throughput));
    row("Output token throughput (tok/s):", absl::StrFormat("%.1f", st.output_token_throughput));
    row("Total token throughput (tok/s):", absl::StrFormat("%.1f", st.total_token_throughput));
    row("Prompt / output / cached prompt tokens:",
        absl::StrCat(st.prompt_tokens, " / ", st.output_tokens, " / ", st.cached_prompt_tokens));
    if (st.goodput.has_value()) {
      row("Goodput (req/s within SLO):",
          absl::StrFormat("%.2f (%d of %d)", st.goodput->request_goodput, st.goodput->good_requests,
                          st.completed));
    }
    absl::StrAppendFormat(&out, "%-12s %10s %10s %10s %10s %10s %10s %10s\n", "Latency (ms)",
                          "mean", "p50", "p90", "p95", "p99", "min", "max");
    const std::pair<const char*, const LatencySummary*> kRows[] = {
        {"TTFT", &st.ttft_s}, {"ITL", &st.itl_s}, {"TPOT", &st.tpot_s}, {"E2E", &st.e2e_s}};
    for (const auto& entry : kRows) {
      const LatencySummary& s = *entry.second;
      absl::StrAppendFormat(&out, "%-12s %10s %10s %10s %10s %10s %10s %10s\n", entry.first,
                            Ms(s, s.mean), Ms(s, s.p50), Ms(s, s.p90), Ms(s, s.p95), Ms(s, s.p99),
                            Ms(s, s.min), Ms(s, s.max));
    }
  }
  if (r.stages.size() >= 2) {
    absl::StrAppendFormat(&out, "\n%-22s %9s %10s %10s %10s %10s %10s %7s\n", "Sweep", "req/s",
                          "out tok/s", "TTFT p50", "TTFT p99", "ITL p50", "E2E p99", "failed");
    for (const StageStats& st : r.stages) {
      absl::StrAppendFormat(&out, "%-22s %9.2f %10.1f %10s %10s %10s %10s %7d\n",
                            StageLabel(st.kind, st.load_value), st.request_throughput,
                            st.output_token_throughput, Ms(st.ttft_s, st.ttft_s.p50),
                            Ms(st.ttft_s, st.ttft_s.p99), Ms(st.itl_s, st.itl_s.p50),
                            Ms(st.e2e_s, st.e2e_s.p99), st.failed);
    }
    out += "(latencies in ms)\n";
  }
  return out;
}

json ResultsJson(const RunReport& r) {
  json stages = json::array();
  for (const StageStats& st : r.stages) stages.push_back(StageJson(st));
  return {{"schema_version", 1},
          {"tool", "vaultgemma-bench"},
          {"started_at", r.started_at},
          {"server", r.options.connection.server},
          {"model",
           {{"model_id", r.model.model_id},
            {"architecture", r.model.architecture},
            {"dtype", r.model.dtype},
            {"device", r.model.device},
            {"vocab_size", r.model.vocab_size},
            {"context_length", r.model.context_length},
            {"server_version", r.model.server_version}}},
          {"config", ConfigJson(r.options)},
          {"stages", stages}};
}

std::string RequestsCsv(const RunReport& r) {
  std::string out =
      "stage,load_kind,load_value,request_index,start_s,status,cancelled_at_end,prompt_tokens,"
      "output_tokens,cached_prompt_tokens,ttft_s,tpot_s,e2e_s,itl_s,peer,error\n";
  for (const RequestRecord& rec : r.records) {
    const StageStats* st = rec.stage >= 0 && static_cast<size_t>(rec.stage) < r.stages.size()
                               ? &r.stages[rec.stage]
                               : nullptr;
    std::vector<std::string> gaps;
    for (double g : rec.itl_s) gaps.push_back(Seconds(g));
    const std::optional<double> tpot = rec.tpot_s();
    absl::StrAppend(&out, rec.stage, ",", st ? LoadKindName(st->kind) : "", ",",
                    st ? (std::isinf(st->load_value) ? "inf" : absl::StrCat(st->load_value)) : "",
                    ",", rec.index, ",", Seconds(rec.start_s), ",", rec.status, ",",
                    rec.cancelled_at_end ? 1 : 0, ",", rec.prompt_tokens, ",", rec.output_tokens,
                    ",", rec.cached_prompt_tokens, ",", rec.ttft_s ? Seconds(*rec.ttft_s) : "", ",",
                    tpot ? Seconds(*tpot) : "", ",", Seconds(rec.e2e_s), ",",
                    absl::StrJoin(gaps, ";"), ",", CsvField(rec.peer), ",", CsvField(rec.error),
                    "\n");
  }
  return out;
}

absl::Status WriteRunFiles(const std::string& dir, const RunReport& report) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat(dir, ": cannot create: ", error.message()));
  }
  std::vector<std::pair<std::string, std::string>> files = RenderCharts(report);
  files.emplace_back(
      "results.json",
      ResultsJson(report).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  files.emplace_back("requests.csv", RequestsCsv(report));
  for (const auto& file : files) {
    const std::string path = (std::filesystem::path(dir) / file.first).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << file.second;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  }
  return absl::OkStatus();
}

}  // namespace vg::client
