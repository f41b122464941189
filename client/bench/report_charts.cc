// The charts of a run (declared in report.h): latency CDFs per stage, and metrics against the
// offered load for sweeps.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "client/bench/report.h"
#include "client/bench/svg_chart.h"

namespace vg::client {
namespace {

// The empirical CDF of one latency per stage, in milliseconds, from completed requests.
LineChart LatencyCdf(const RunReport& r, const std::string& title, const std::string& x_label,
                     bool itl) {
  LineChart chart;
  chart.title = title;
  chart.x_label = x_label;
  chart.y_label = "fraction of values at or below (CDF)";
  chart.step = true;
  for (size_t i = 0; i < r.stages.size(); ++i) {
    std::vector<double> ms;
    for (const RequestRecord& rec : r.records) {
      if (rec.stage != static_cast<int>(i) || !rec.completed()) continue;
      if (itl) {
        for (double g : rec.itl_s) ms.push_back(g * 1e3);
      } else if (rec.ttft_s.has_value()) {
        ms.push_back(*rec.ttft_s * 1e3);
      }
    }
    chart.series.push_back(
        {StageLabel(r.stages[i].kind, r.stages[i].load_value), EmpiricalCdf(std::move(ms))});
  }
  return chart;
}

std::string LoadAxisLabel(const RunReport& r) {
  return r.options.load_kind == LoadKind::kConcurrency ? "concurrency (requests in flight)"
                                                       : "offered request rate (requests/s)";
}

// A note for the title when a rate of inf cannot sit on a numeric axis.
std::string InfNote(const RunReport& r) {
  for (const StageStats& st : r.stages) {
    if (std::isinf(st.load_value)) return " (rate inf not shown)";
  }
  return "";
}

LineChart ThroughputVsLoad(const RunReport& r) {
  LineChart chart;
  chart.title = "Token throughput vs load" + InfNote(r);
  chart.x_label = LoadAxisLabel(r);
  chart.y_label = "throughput (tokens/s)";
  chart.markers = true;
  ChartSeries output{"output tokens/s", {}}, total{"total tokens/s", {}};
  for (const StageStats& st : r.stages) {
    output.points.emplace_back(st.load_value, st.output_token_throughput);
    total.points.emplace_back(st.load_value, st.total_token_throughput);
  }
  chart.series = {output, total};
  return chart;
}

LineChart P99LatencyVsLoad(const RunReport& r) {
  LineChart chart;
  chart.title = "p99 latency vs load" + InfNote(r);
  chart.x_label = LoadAxisLabel(r);
  chart.y_label = "p99 latency (ms)";
  chart.markers = true;
  chart.log_y = true;  // ITL and E2E differ by orders of magnitude
  ChartSeries ttft{"TTFT p99", {}}, itl{"ITL p99", {}}, tpot{"TPOT p99", {}}, e2e{"E2E p99", {}};
  for (const StageStats& st : r.stages) {
    const double x = st.load_value;
    if (st.ttft_s.count > 0) ttft.points.emplace_back(x, st.ttft_s.p99 * 1e3);
    if (st.itl_s.count > 0) itl.points.emplace_back(x, st.itl_s.p99 * 1e3);
    if (st.tpot_s.count > 0) tpot.points.emplace_back(x, st.tpot_s.p99 * 1e3);
    if (st.e2e_s.count > 0) e2e.points.emplace_back(x, st.e2e_s.p99 * 1e3);
  }
  chart.series = {ttft, itl, tpot, e2e};
  return chart;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> RenderCharts(const RunReport& r) {
  std::vector<std::pair<std::string, std::string>> files = {
      {"ttft_cdf.svg", RenderSvg(LatencyCdf(r, "Time to first token: CDF per stage",
                                            "time to first token (ms)", false))},
      {"itl_cdf.svg", RenderSvg(LatencyCdf(r, "Inter-token latency: CDF per stage",
                                           "inter-token latency (ms)", true))}};
  if (r.stages.size() >= 2) {
    files.emplace_back("throughput_vs_load.svg", RenderSvg(ThroughputVsLoad(r)));
    files.emplace_back("p99_latency_vs_load.svg", RenderSvg(P99LatencyVsLoad(r)));
  }
  return files;
}

}  // namespace vg::client
