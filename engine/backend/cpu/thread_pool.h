// ThreadPool: a fixed set of compute threads for the CPU backend's data-parallel loops.
//
// ParallelFor(n, fn) splits [0, n) into one contiguous range per thread by static partitioning
// (thread t gets [n*t/T, n*(t+1)/T)) and runs fn(begin, end) on each non-empty range; the calling
// thread runs range 0 itself and returns when every range is done. Static partitioning keeps
// which thread computes what a pure function of (n, T), which the backend's determinism relies on
// (though kernels are written so results do not depend on the partition at all).
//
// Thread-safety: ParallelFor may be called from one thread at a time (the backend's caller); it is
// not reentrant (fn must not call ParallelFor on the same pool).
#ifndef VG_ENGINE_BACKEND_CPU_THREAD_POOL_H_
#define VG_ENGINE_BACKEND_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vg::engine::cpu {

class ThreadPool {
 public:
  // `num_threads` counts the caller: 1 means no worker threads at all. Values < 1 mean one per
  // hardware thread.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn over a static partition of [0, n); blocks until all ranges are done. n <= 0 is a no-op.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);
  void RunRange(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // Task of the current generation; written by the caller before the generation is bumped.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace vg::engine::cpu

#endif  // VG_ENGINE_BACKEND_CPU_THREAD_POOL_H_
