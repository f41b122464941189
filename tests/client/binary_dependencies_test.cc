// What the shipped binaries link, read with ldd: no CUDA library in the server or the CLI (a
// CPU-only deployment must run without one; TOOLCHAIN.md landmine 2), and no libsentencepiece in
// any process that has gRPC (landmine 1: it crashes at start-up).
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runner/subprocess.h"

namespace vg::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Ldd(const std::string& binary) {
  const ProcessResult r =
      RunProcess({"/usr/bin/ldd", std::string(VG_BINARY_DIR) + "/bin/" + binary});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(BinaryDependenciesTest, ServerAndCliHaveNoCudaAndNoSentencepiece) {
  for (const char* binary :
       {"vaultgemma-server", "vaultgemma-cli", "vaultgemma-run", "vaultgemma-bench"}) {
    SCOPED_TRACE(binary);
    const std::string libs = Ldd(binary);
    EXPECT_THAT(libs, Not(HasSubstr("libcuda")));
    EXPECT_THAT(libs, Not(HasSubstr("libcublas")));
    EXPECT_THAT(libs, Not(HasSubstr("libsentencepiece")));
  }
  // The check can see: the server does link gRPC.
  EXPECT_THAT(Ldd("vaultgemma-server"), HasSubstr("libgrpc++"));
}

}  // namespace
}  // namespace vg::testing
