#include "tests/server/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace vg::server::testing {

ServerProcess::ServerProcess(const std::vector<std::string>& argv,
                             const std::vector<std::string>& env) {
  int fds[2];
  if (pipe(fds) != 0) return;
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_copy = env;  // putenv keeps the pointers
  pid_ = fork();
  if (pid_ == 0) {
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    for (std::string& entry : env_copy) putenv(entry.data());
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  err_fd_ = fds[0];
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (err_fd_ >= 0) close(err_fd_);
}

std::optional<std::string> ServerProcess::WaitForLine(const std::string& needle,
                                                      double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  while (true) {
    size_t newline;
    while ((newline = err_.find('\n', scanned_)) != std::string::npos) {
      std::string line = err_.substr(scanned_, newline - scanned_);
      scanned_ = newline + 1;
      if (line.find(needle) != std::string::npos) return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || err_fd_ < 0) return std::nullopt;
    pollfd pfd{err_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buffer[4096];
    const ssize_t n = read(err_fd_, buffer, sizeof(buffer));
    if (n <= 0) return std::nullopt;
    err_.append(buffer, static_cast<size_t>(n));
  }
}

void ServerProcess::Signal(int signal_number) {
  if (pid_ > 0) kill(pid_, signal_number);
}

int ServerProcess::WaitForExit(double timeout_seconds) {
  if (pid_ <= 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      // The child is gone: read what it left in the pipe, up to EOF.
      char buffer[4096];
      for (ssize_t n; err_fd_ >= 0 && (n = read(err_fd_, buffer, sizeof(buffer))) > 0;) {
        err_.append(buffer, static_cast<size_t>(n));
      }
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    if (err_fd_ >= 0) {
      pollfd pfd{err_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 0) > 0) {
        char buffer[4096];
        const ssize_t n = read(err_fd_, buffer, sizeof(buffer));
        if (n > 0) err_.append(buffer, static_cast<size_t>(n));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

}  // namespace vg::server::testing
