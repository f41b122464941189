// WriteStallWatch: ends Generate streams whose client has stopped reading.
//
// A stream's writes wait on HTTP/2 flow control while its client does not read. Such a client
// keeps its stream, and so its place among SetMaxStreams' (max-num-seqs + max-queued) places, for
// as long as its connection lives: keepalive PINGs are answered by the client's transport whether
// or not its application reads. A handful of such streams could hold every place. The watch looks
// at each registered stream every `timeout` / 4 (at most every second) and asks it to cancel itself
// once one write has been waiting for `timeout` or longer, so a stalled stream is ended between
// `timeout` and about 1.25 x `timeout` after its write began. A client that reads slowly but keeps
// reading never stalls a write that long.
//
// Thread-safety: Watch may be called from any thread; the watch runs its checks on a thread of its
// own, outside its lock, so a stream may be destroyed or unregister itself at any time.
#ifndef VG_SERVER_WRITE_STALL_WATCH_H_
#define VG_SERVER_WRITE_STALL_WATCH_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace vg::server {

// What the watch asks of a stream.
class StallWatched {
 public:
  virtual ~StallWatched() = default;
  // Cancels the stream if its current write began before `now - timeout`; true if it did so.
  // Called from the watch's thread; must not block on the watch.
  virtual bool CancelIfStalled(std::chrono::steady_clock::time_point now,
                               std::chrono::steady_clock::duration timeout) = 0;
};

class WriteStallWatch {
 public:
  // `timeout` > 0. Starts the watch's thread. `on_cancelled`, if set, is told after each check that
  // cancelled streams how many it cancelled, on the watch's thread and outside its lock.
  explicit WriteStallWatch(std::chrono::steady_clock::duration timeout,
                           std::function<void(int64_t)> on_cancelled = nullptr);
  ~WriteStallWatch();  // stops and joins the thread
  WriteStallWatch(const WriteStallWatch&) = delete;
  WriteStallWatch& operator=(const WriteStallWatch&) = delete;

  // Watches `stream` until it is destroyed (only a weak reference is kept).
  void Watch(std::weak_ptr<StallWatched> stream);

  std::chrono::steady_clock::duration timeout() const { return timeout_; }
  // Streams cancelled so far.
  int64_t cancelled() const;

 private:
  void Run();

  const std::chrono::steady_clock::duration timeout_;
  const std::chrono::steady_clock::duration period_;
  const std::function<void(int64_t)> on_cancelled_;
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<StallWatched>> streams_ ABSL_GUARDED_BY(mu_);
  size_t live_after_prune_ ABSL_GUARDED_BY(mu_) = 0;  // streams_.size() after the last prune
  int64_t cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;  // last: started once everything above is set up
};

}  // namespace vg::server

#endif  // VG_SERVER_WRITE_STALL_WATCH_H_
