#include "server/write_stall_watch.h"

#include <algorithm>
#include <utility>

namespace vg::server {

namespace {

std::chrono::steady_clock::duration CheckPeriod(std::chrono::steady_clock::duration timeout) {
  const std::chrono::steady_clock::duration quarter = timeout / 4;
  return std::clamp<std::chrono::steady_clock::duration>(quarter, std::chrono::milliseconds(10),
                                                         std::chrono::seconds(1));
}

}  // namespace

WriteStallWatch::WriteStallWatch(std::chrono::steady_clock::duration timeout,
                                 std::function<void(int64_t)> on_cancelled)
    : timeout_(timeout),
      period_(CheckPeriod(timeout)),
      on_cancelled_(std::move(on_cancelled)),
      thread_([this] { Run(); }) {}

WriteStallWatch::~WriteStallWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

void WriteStallWatch::Watch(std::weak_ptr<StallWatched> stream) {
  std::lock_guard<std::mutex> lock(mu_);
  // A weak reference keeps its stream's memory (one allocation with its control block) until it
  // is dropped: forget finished streams here too, not only once per check, so that a burst of
  // short streams leaves no more than about twice the live ones behind.
  if (streams_.size() >= 2 * live_after_prune_ + 64) {
    std::erase_if(streams_, [](const std::weak_ptr<StallWatched>& s) { return s.expired(); });
    live_after_prune_ = streams_.size();
  }
  streams_.push_back(std::move(stream));
}

int64_t WriteStallWatch::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void WriteStallWatch::Run() {
  std::vector<std::shared_ptr<StallWatched>> live;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_cv_.wait_for(lock, period_, [this] { return stop_; })) {
    // Forget the streams that are gone; check the others outside the lock (a check may cancel a
    // call, and gRPC may run that call's reactions, and destroy its stream, on this thread).
    live.clear();
    std::erase_if(streams_, [&live](const std::weak_ptr<StallWatched>& stream) {
      std::shared_ptr<StallWatched> locked = stream.lock();
      if (locked == nullptr) return true;
      live.push_back(std::move(locked));
      return false;
    });
    lock.unlock();
    const auto now = std::chrono::steady_clock::now();
    int64_t cancelled = 0;
    for (const std::shared_ptr<StallWatched>& stream : live) {
      if (stream->CancelIfStalled(now, timeout_)) ++cancelled;
    }
    live.clear();  // the last reference to a finished stream may be dropped here
    if (cancelled > 0 && on_cancelled_ != nullptr) on_cancelled_(cancelled);
    lock.lock();
    cancelled_ += cancelled;
    live_after_prune_ = streams_.size();
  }
}

}  // namespace vg::server
