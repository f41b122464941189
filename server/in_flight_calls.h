// InFlightCalls: counts the RPCs a service has started and gRPC has not finished with yet, so that
// a graceful shutdown can wait for every call to have written its final status before the server
// closes its connections (see server_main.cc: closing a connection right after a stream's last
// write can lose that write; once no call is in flight, grpc::Server::Shutdown's GOAWAY and its
// PING round trip follow every status on the wire).
//
// A call counts from Begin (the first line of its handler) to End (its reactor's OnDone, which
// gRPC runs after the call's last operation, the status included, has completed).
//
// Thread-safety: every method may be called from any thread. std::mutex rather than absl::Mutex
// in the server: Debian's abseil is not built for ThreadSanitizer, so TSan cannot see its locks,
// while pthread's are intercepted (make test-tsan runs the server tests).
#ifndef VG_SERVER_IN_FLIGHT_CALLS_H_
#define VG_SERVER_IN_FLIGHT_CALLS_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace vg::server {

class InFlightCalls {
 public:
  InFlightCalls() = default;
  InFlightCalls(const InFlightCalls&) = delete;
  InFlightCalls& operator=(const InFlightCalls&) = delete;

  void Begin() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
  }
  // Precondition: a matching Begin.
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--count_ == 0) none_.notify_all();
  }

  int64_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

  // Blocks until no call is in flight (true) or `deadline` passes with some still running (false).
  // New calls may begin at any time, so "none" holds at the moment of return only.
  bool WaitForNone(absl::Time deadline) const {
    std::unique_lock<std::mutex> lock(mu_);
    return none_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return count_ == 0; });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable none_;  // notified when count_ drops to zero
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vg::server

#endif  // VG_SERVER_IN_FLIGHT_CALLS_H_
