// vaultgemma-bench's SVG writer, and the two test helpers that check its output and results.json.
#include "client/bench/svg_chart.h"
#include "gtest/gtest.h"
#include "tests/client/json_schema_subset.h"
#include "tests/client/xml_balance.h"

namespace vg::client {
namespace {

using testing::CheckXmlBalance;
using testing::ValidateJsonSchema;

TEST(BenchSvgTest, ChartIsStandaloneWellFormedSvgWithEverySeries) {
  LineChart chart;
  chart.title = "TTFT <p99> & friends";
  chart.x_label = "time to first token (ms)";
  chart.y_label = "fraction";
  chart.step = true;
  chart.series = {{"concurrency 1", EmpiricalCdf({3, 1, 2})},
                  {"rate \"inf\"", EmpiricalCdf({10, 20, 30, 40})}};
  const std::string svg = RenderSvg(chart);
  EXPECT_EQ(CheckXmlBalance(svg, "svg"), "");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find("viewBox=\"0 0 "), std::string::npos);
  EXPECT_NE(svg.find("TTFT &lt;p99&gt; &amp; friends"), std::string::npos);
  EXPECT_NE(svg.find("time to first token (ms)"), std::string::npos);
  EXPECT_NE(svg.find(">concurrency 1</text>"), std::string::npos);
  EXPECT_NE(svg.find(">rate &quot;inf&quot;</text>"), std::string::npos);
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos;
       at = svg.find("<polyline", at + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, 2u);
  // Ticks on 1/2/5 steps: 0..40 in steps of 10.
  EXPECT_NE(svg.find(">40</text>"), std::string::npos);
}

TEST(BenchSvgTest, LogAxisEmptyChartAndNonFinitePointsStillRender) {
  LineChart chart;
  chart.title = "p99";
  chart.log_y = true;
  chart.markers = true;
  chart.series = {{"a", {{1, 0.5}, {2, 50}, {3, -1}, {4, std::nan("")}}}};
  const std::string svg = RenderSvg(chart);
  EXPECT_EQ(CheckXmlBalance(svg, "svg"), "");
  EXPECT_NE(svg.find("(log scale)"), std::string::npos);
  EXPECT_NE(svg.find(">100</text>"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  LineChart empty;
  empty.title = "nothing";
  const std::string none = RenderSvg(empty);
  EXPECT_EQ(CheckXmlBalance(none, "svg"), "");
  EXPECT_NE(none.find("no data"), std::string::npos);
}

TEST(BenchSvgTest, EmpiricalCdfStepsAndDownsampling) {
  const auto cdf = EmpiricalCdf({3, 1, 2});
  const std::vector<std::pair<double, double>> expected = {
      {1, 0}, {1, 1.0 / 3}, {2, 2.0 / 3}, {3, 1}};
  EXPECT_EQ(cdf, expected);
  EXPECT_TRUE(EmpiricalCdf({}).empty());
  std::vector<double> many;
  many.reserve(100000);
  for (int i = 0; i < 100000; ++i) many.push_back(i);
  const auto thin = EmpiricalCdf(many, 1000);
  EXPECT_LE(thin.size(), 1002u);
  EXPECT_EQ(thin.back(), std::make_pair(99999.0, 1.0));
}

TEST(BenchSvgTest, XmlCheckRejectsBrokenDocuments) {
  EXPECT_EQ(CheckXmlBalance("<svg><g/></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg><g></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg><text>a < b</text></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg><text>a & b</text></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg x=1></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<html></html>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg></svg><svg></svg>", "svg"), "");
  EXPECT_NE(CheckXmlBalance("<svg>", "svg"), "");
}

TEST(BenchSvgTest, SchemaSubsetValidatorFindsViolations) {
  const nlohmann::json schema = nlohmann::json::parse(R"({
    "type": "object", "required": ["a", "s"], "additionalProperties": false,
    "properties": {
      "a": {"type": "array", "items": {"$ref": "#/$defs/n"}},
      "s": {"enum": ["x", "y"]},
      "o": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}}
    },
    "$defs": {"n": {"type": "number", "minimum": 0}}
  })");
  EXPECT_TRUE(ValidateJsonSchema(
                  schema, nlohmann::json::parse(R"({"a": [1, 2.5], "s": "x", "o": {"k": 3}})"))
                  .empty());
  EXPECT_TRUE(ValidateJsonSchema(schema, nlohmann::json::parse(R"({"a": [], "s": "y", "o": null})"))
                  .empty());
  const std::pair<const char*, const char*> kBad[] = {
      {R"({"a": []})", "missing required \"s\""},
      {R"({"a": [1, "2"], "s": "x"})", "/a/1"},
      {R"({"a": [-1], "s": "x"})", "minimum"},
      {R"({"a": [], "s": "z"})", "/s"},
      {R"({"a": [], "s": "x", "extra": 1})", "/extra"},
      {R"({"a": [], "s": "x", "o": {"k": 1.5}})", "/o/k"},
      {R"([])", "type"},
  };
  for (const auto& [text, where] : kBad) {
    const auto errors = ValidateJsonSchema(schema, nlohmann::json::parse(text));
    ASSERT_FALSE(errors.empty()) << text;
    EXPECT_NE(errors[0].find(where), std::string::npos) << errors[0];
  }
}

}  // namespace
}  // namespace vg::client
