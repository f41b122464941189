// What the harnesses under tests/fuzz share: a property check that libFuzzer reports as a crash.
//
// Sanitizers catch memory and undefined-behaviour bugs on their own; VG_FUZZ_CHECK states what an
// API promises beyond not crashing (a status code, an invariant of an accepted value, two
// functions agreeing) and aborts with the message when the promise is broken, so that libFuzzer
// saves the input as a crash artifact.
#ifndef VG_TESTS_FUZZ_FUZZ_CHECK_H_
#define VG_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define VG_FUZZ_CHECK(condition, message)                                               \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: VG_FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, \
                   #condition, std::string(message).c_str());                           \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

#endif  // VG_TESTS_FUZZ_FUZZ_CHECK_H_
