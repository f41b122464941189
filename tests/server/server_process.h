// A long-running child process for tests: started with fork/exec, its stderr read line by line
// until a wanted line appears, then signalled and reaped. Test-only helper.
#ifndef VG_TESTS_SERVER_SERVER_PROCESS_H_
#define VG_TESTS_SERVER_SERVER_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace vg::server::testing {

class ServerProcess {
 public:
  // Starts argv[0] (a path) with argv and this environment plus `env` ("NAME=value" entries);
  // stdout goes to /dev/null, stderr to a pipe.
  explicit ServerProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env = {});
  ~ServerProcess();  // SIGKILLs and reaps a child still running

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Reads stderr until a line containing `needle` (returned) or EOF/timeout (nullopt).
  std::optional<std::string> WaitForLine(const std::string& needle, double timeout_seconds);
  // Everything read from stderr so far.
  const std::string& stderr_text() const { return err_; }
  // Sends `signal_number`.
  void Signal(int signal_number);
  // Waits up to timeout for exit, then reads the rest of stderr; returns the exit code, -1 if
  // killed by a signal or timed out.
  int WaitForExit(double timeout_seconds);

 private:
  pid_t pid_ = -1;
  int err_fd_ = -1;
  std::string err_;
  size_t scanned_ = 0;
};

}  // namespace vg::server::testing

#endif  // VG_TESTS_SERVER_SERVER_PROCESS_H_
