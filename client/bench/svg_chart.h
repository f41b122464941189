// A small line-chart writer producing standalone SVG 1.1 (xmlns and viewBox set, no scripts, no
// external fonts or libraries), enough for vaultgemma-bench's charts: empirical CDFs and metrics
// against load. Axes carry labels with units and "nice" ticks (1, 2, 5 x 10^k); the y axis may be
// logarithmic; each series is one coloured polyline with a legend entry.
#ifndef VG_CLIENT_BENCH_SVG_CHART_H_
#define VG_CLIENT_BENCH_SVG_CHART_H_

#include <string>
#include <utility>
#include <vector>

namespace vg::client {

struct ChartSeries {
  std::string name;                               // legend text
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in the given order
};

struct LineChart {
  std::string title;
  std::string x_label;  // with the unit, e.g. "time to first token (ms)"
  std::string y_label;
  std::vector<ChartSeries> series;
  bool step = false;        // draw as a staircase (for empirical CDFs)
  bool markers = false;     // a dot at every point (for sparse series such as a sweep)
  bool log_y = false;       // logarithmic y axis; non-positive y values are dropped
  bool y_from_zero = true;  // linear y axis starts at 0 rather than at the smallest value
};

// Renders the chart. A chart without any finite point still renders (axes and the title, and
// "no data"). Pure function; thread-safe.
std::string RenderSvg(const LineChart& chart);

// The empirical CDF of `values` as staircase points: (v_i, (i+1)/n) for the sorted values v_0..,
// starting at (v_0, 0). Above `max_points` values, only about that many evenly spaced ranks are
// kept (the last value always). Empty for empty input.
std::vector<std::pair<double, double>> EmpiricalCdf(std::vector<double> values,
                                                    size_t max_points = 1000);

// Escapes &, <, >, " and ' for SVG text and attributes.
std::string XmlEscape(const std::string& text);

}  // namespace vg::client

#endif  // VG_CLIENT_BENCH_SVG_CHART_H_
