// vaultgemma-server must have no CUDA library among its ELF NEEDED entries (issue 7, TOOLCHAIN.md
// landmine 2): the CUDA backend lives in a plugin loaded at run time. Runs in every build.
#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace {

TEST(ServerElfTest, NoCudaLibraryIsNeeded) {
  const std::string binary = std::string(VG_BINARY_DIR) + "/bin/vaultgemma-server";
  FILE* pipe = popen(("readelf -d '" + binary + "' 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << out;
  ASSERT_NE(out.find("(NEEDED)"), std::string::npos) << out;
  for (const char* lib : {"libcuda.", "libcudart", "libcublas", "libcublasLt"}) {
    EXPECT_EQ(out.find(lib), std::string::npos) << lib << " is NEEDED:\n" << out;
  }
}

}  // namespace
