#include "tests/server/started_server.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace vg::server::testing {

std::optional<int> PortAfter(const std::string& line, const std::string& marker) {
  const size_t at = line.find(marker);
  if (at == std::string::npos) return std::nullopt;
  const char* digits = line.c_str() + at + marker.size();
  char* end = nullptr;
  const long port = std::strtol(digits, &end, 10);
  if (end == digits || port <= 0 || port > 65535) return std::nullopt;
  return static_cast<int>(port);
}

StartedServer StartServerBinary(const std::vector<std::string>& argv, double timeout_seconds) {
  StartedServer started;
  started.process = std::make_unique<ServerProcess>(argv);
  if (!started.process->started()) return started;
  if (std::find(argv.begin(), argv.end(), "--no-metrics") == argv.end()) {
    const auto line = started.process->WaitForLine("(metrics port ", timeout_seconds);
    if (!line.has_value()) return started;
    started.metrics_port = PortAfter(*line, "(metrics port ").value_or(0);
  }
  const auto line = started.process->WaitForLine("(port ", timeout_seconds);
  if (!line.has_value()) return started;
  started.port = PortAfter(*line, "(port ").value_or(0);
  return started;
}

double MetricValue(const std::string& body, const std::string& series) {
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

}  // namespace vg::server::testing
