// bandwidth_probe: the machine's memory read bandwidth, one reader and one per core, as JSON on
// stdout. The side-by-side benchmark runs it in the same run as the model timings, so that each
// figure can be put against the bandwidth roofline of that moment.
//   bandwidth_probe [--bytes N]   (default 1 GiB, far beyond any cache)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "tools/bench/bandwidth.h"

int main(int argc, char** argv) {
  size_t bytes = size_t{1} << 30;
  if (argc == 3 && std::strcmp(argv[1], "--bytes") == 0) {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || value < (1u << 20)) {
      std::fprintf(stderr, "bandwidth_probe: --bytes must be an integer >= 1048576\n");
      return 2;
    }
    bytes = static_cast<size_t>(value);
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: bandwidth_probe [--bytes N]\n");
    return 2;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double one = vg::tools::MeasureReadBandwidth(1, bytes);
  const double all = vg::tools::MeasureReadBandwidth(cores, bytes);
  std::printf(
      "{\"bytes\": %zu, \"cores\": %d, \"read_bytes_per_s_one_thread\": %.0f, "
      "\"read_bytes_per_s_all_threads\": %.0f}\n",
      bytes, cores, one, all);
  return 0;
}
