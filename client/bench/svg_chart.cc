#include "client/bench/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"

namespace vg::client {
namespace {

// Layout, in SVG user units: the plot area, with the legend in a column to its right.
constexpr double kWidth = 900, kHeight = 460;
constexpr double kLeft = 80, kRight = 700, kTop = 50, kBottom = 390;
constexpr const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                   "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

std::string Num(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", v);
  return buffer;
}

std::string TickLabel(double v) {
  if (std::fabs(v) < 1e-12) return "0";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v);
  return buffer;
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;

  double Fraction(double v) const {
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
};

// Linear axis over [lo, hi] widened to multiples of a 1/2/5 x 10^k step, about 5 ticks.
Axis LinearAxis(double lo, double hi) {
  Axis a;
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude * 10;
  for (double m : {1.0, 2.0, 5.0}) {
    if (magnitude * m >= raw) {
      step = magnitude * m;
      break;
    }
  }
  a.lo = std::floor(lo / step) * step;
  a.hi = std::ceil(hi / step) * step;
  for (double t = a.lo; t <= a.hi + step * 1e-9; t += step) a.ticks.push_back(t);
  return a;
}

// Logarithmic axis over whole decades; ticks at 1, 2, 5 x 10^k within a decade or two, else at
// powers of ten only.
Axis LogAxis(double lo, double hi) {
  Axis a;
  a.log = true;
  a.lo = std::pow(10.0, std::floor(std::log10(lo)));
  a.hi = std::pow(10.0, std::ceil(std::log10(hi)));
  if (a.hi <= a.lo) a.hi = a.lo * 10;
  const bool dense = a.hi / a.lo <= 100;
  for (double decade = a.lo; decade <= a.hi * 1.0001; decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      if ((m == 1.0 || dense) && decade * m <= a.hi * 1.0001) a.ticks.push_back(decade * m);
    }
  }
  return a;
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<std::pair<double, double>> EmpiricalCdf(std::vector<double> values, size_t max_points) {
  std::vector<std::pair<double, double>> out;
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  const size_t stride = std::max<size_t>(1, n / std::max<size_t>(1, max_points));
  out.emplace_back(values[0], 0.0);
  for (size_t i = 0; i < n; i += stride) {
    out.emplace_back(values[i], static_cast<double>(i + 1) / static_cast<double>(n));
  }
  if ((n - 1) % stride != 0) out.emplace_back(values[n - 1], 1.0);
  return out;
}

std::string RenderSvg(const LineChart& chart) {
  // The finite points to draw (a log axis drops non-positive y).
  std::vector<std::vector<std::pair<double, double>>> drawn;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const ChartSeries& s : chart.series) {
    drawn.emplace_back();
    for (const auto& p : s.points) {
      if (!std::isfinite(p.first) || !std::isfinite(p.second)) continue;
      if (chart.log_y && p.second <= 0) continue;
      drawn.back().push_back(p);
      x_lo = std::min(x_lo, p.first);
      x_hi = std::max(x_hi, p.first);
      y_lo = std::min(y_lo, p.second);
      y_hi = std::max(y_hi, p.second);
    }
  }
  const bool empty = !std::isfinite(x_lo);
  if (empty) x_lo = 0, x_hi = 1, y_lo = chart.log_y ? 1 : 0, y_hi = chart.log_y ? 10 : 1;
  if (!chart.log_y && chart.y_from_zero) y_lo = std::min(y_lo, 0.0);
  const Axis x = LinearAxis(x_lo, x_hi);
  const Axis y = chart.log_y ? LogAxis(y_lo, y_hi) : LinearAxis(y_lo, y_hi);
  auto px = [&](double v) { return kLeft + x.Fraction(v) * (kRight - kLeft); };
  auto py = [&](double v) { return kBottom - y.Fraction(v) * (kBottom - kTop); };

  std::string svg = absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"", kWidth, "\" height=\"",
      kHeight, "\" viewBox=\"0 0 ", kWidth, " ", kHeight,
      "\" font-family=\"sans-serif\" font-size=\"12\">\n", "<title>", XmlEscape(chart.title),
      "</title>\n", "<rect x=\"0\" y=\"0\" width=\"", kWidth, "\" height=\"", kHeight,
      "\" fill=\"white\"/>\n", "<text x=\"", Num((kLeft + kRight) / 2),
      "\" y=\"28\" text-anchor=\"middle\" "
      "font-size=\"16\" font-weight=\"bold\">",
      XmlEscape(chart.title), "</text>\n");
  // Grid, ticks and tick labels.
  svg += "<g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (double t : x.ticks) {
    absl::StrAppend(&svg, "<line x1=\"", Num(px(t)), "\" y1=\"", Num(kTop), "\" x2=\"", Num(px(t)),
                    "\" y2=\"", Num(kBottom), "\"/>\n");
  }
  for (double t : y.ticks) {
    absl::StrAppend(&svg, "<line x1=\"", Num(kLeft), "\" y1=\"", Num(py(t)), "\" x2=\"",
                    Num(kRight), "\" y2=\"", Num(py(t)), "\"/>\n");
  }
  svg += "</g>\n<g fill=\"#333333\">\n";
  for (double t : x.ticks) {
    absl::StrAppend(&svg, "<text x=\"", Num(px(t)), "\" y=\"", Num(kBottom + 18),
                    "\" text-anchor=\"middle\">", TickLabel(t), "</text>\n");
  }
  for (double t : y.ticks) {
    absl::StrAppend(&svg, "<text x=\"", Num(kLeft - 8), "\" y=\"", Num(py(t) + 4),
                    "\" text-anchor=\"end\">", TickLabel(t), "</text>\n");
  }
  svg += "</g>\n";
  absl::StrAppend(&svg, "<rect x=\"", Num(kLeft), "\" y=\"", Num(kTop), "\" width=\"",
                  Num(kRight - kLeft), "\" height=\"", Num(kBottom - kTop),
                  "\" fill=\"none\" stroke=\"#333333\"/>\n");
  absl::StrAppend(&svg, "<text x=\"", Num((kLeft + kRight) / 2), "\" y=\"", Num(kBottom + 44),
                  "\" text-anchor=\"middle\">", XmlEscape(chart.x_label), "</text>\n");
  absl::StrAppend(&svg, "<text x=\"20\" y=\"", Num((kTop + kBottom) / 2),
                  "\" text-anchor=\"middle\" transform=\"rotate(-90 20 ", Num((kTop + kBottom) / 2),
                  ")\">", XmlEscape(chart.y_label), chart.log_y ? " (log scale)" : "", "</text>\n");
  if (empty) {
    absl::StrAppend(&svg, "<text x=\"", Num((kLeft + kRight) / 2), "\" y=\"",
                    Num((kTop + kBottom) / 2),
                    "\" text-anchor=\"middle\" fill=\"#999999\">"
                    "no data</text>\n");
  }
  // Series and legend.
  for (size_t i = 0; i < drawn.size(); ++i) {
    const char* color = kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
    const std::string name = XmlEscape(chart.series[i].name);
    std::string points;
    for (size_t j = 0; j < drawn[i].size(); ++j) {
      const auto& p = drawn[i][j];
      if (chart.step && j > 0) {
        absl::StrAppend(&points, Num(px(p.first)), ",", Num(py(drawn[i][j - 1].second)), " ");
      }
      absl::StrAppend(&points, Num(px(p.first)), ",", Num(py(p.second)), " ");
    }
    absl::StrAppend(&svg, "<g class=\"series\"><title>", name, "</title>\n<polyline points=\"",
                    points, "\" fill=\"none\" stroke=\"", color, "\" stroke-width=\"2\"/>\n");
    if (chart.markers) {
      for (const auto& p : drawn[i]) {
        absl::StrAppend(&svg, "<circle cx=\"", Num(px(p.first)), "\" cy=\"", Num(py(p.second)),
                        "\" r=\"3.5\" fill=\"", color, "\"/>\n");
      }
    }
    svg += "</g>\n";
    const double ly = kTop + 10 + 22 * static_cast<double>(i);
    absl::StrAppend(&svg, "<line x1=\"", Num(kRight + 20), "\" y1=\"", Num(ly), "\" x2=\"",
                    Num(kRight + 48), "\" y2=\"", Num(ly), "\" stroke=\"", color,
                    "\" stroke-width=\"3\"/>\n<text x=\"", Num(kRight + 54), "\" y=\"", Num(ly + 4),
                    "\">", name, "</text>\n");
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace vg::client
