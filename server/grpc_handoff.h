// Orderings that gRPC guarantees and ThreadSanitizer cannot see.
//
// Debian's libgrpc is not built with -fsanitize=thread, so TSan sees none of the locks and atomics
// with which gRPC hands a reactor from the thread that starts an operation (StartWrite, Finish, a
// handler returning its reactor) to the thread that runs the reaction (OnWriteDone, OnCancel,
// OnDone). Everything our reactors write before the hand-off then looks unsynchronized with what
// the reaction reads. These two calls state gRPC's documented guarantee (a reaction runs after the
// operation that caused it, OnDone after every operation) as a release/acquire pair on the reactor,
// the way an instrumented gRPC would. They are no-ops unless the build has ThreadSanitizer
// (make test-tsan), and they order nothing but the reactor's own hand-offs: state shared with the
// engine thread is still guarded by its mutex, which TSan checks.
#ifndef VG_SERVER_GRPC_HANDOFF_H_
#define VG_SERVER_GRPC_HANDOFF_H_

#if defined(__SANITIZE_THREAD__)
#define VG_GRPC_HANDOFF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VG_GRPC_HANDOFF_TSAN 1
#endif
#endif

#ifdef VG_GRPC_HANDOFF_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace vg::server {

// Just before giving `reactor` to gRPC: starting one of its operations or returning it from a
// handler.
inline void ReleaseToGrpc(const void* reactor) {
#ifdef VG_GRPC_HANDOFF_TSAN
  __tsan_release(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

// First thing in each reaction gRPC runs on `reactor`.
inline void AcquireFromGrpc(const void* reactor) {
#ifdef VG_GRPC_HANDOFF_TSAN
  __tsan_acquire(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

}  // namespace vg::server

#endif  // VG_SERVER_GRPC_HANDOFF_H_
