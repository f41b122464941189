// Runs a program as a separate process for tests, feeding stdin and capturing stdout, stderr and
// the exit code. Test-only helper.
#ifndef VG_TESTS_RUNNER_SUBPROCESS_H_
#define VG_TESTS_RUNNER_SUBPROCESS_H_

#include <string>
#include <vector>

namespace vg::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs `argv[0]` with `argv`, writing `stdin_text` to its standard input.
ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_text = "");

}  // namespace vg::testing

#endif  // VG_TESTS_RUNNER_SUBPROCESS_H_
