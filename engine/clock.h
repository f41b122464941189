// Clock: where the engine reads time (step durations, per-request queue time, time to first
// token, end-to-end latency). Tests substitute a fake that advances only when told to, so timings
// can be checked exactly.
#ifndef VG_ENGINE_CLOCK_H_
#define VG_ENGINE_CLOCK_H_

namespace vg::engine {

class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds since an arbitrary, fixed origin; never decreases. Thread-safe.
  virtual double Now() const = 0;

  // The process's monotonic clock (std::chrono::steady_clock).
  static const Clock& Real();
};

}  // namespace vg::engine

#endif  // VG_ENGINE_CLOCK_H_
