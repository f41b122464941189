#include "engine/model/model_path.h"

#include <stdlib.h>

#include <chrono>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/safetensors_writer.h"

namespace vg::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Sets the Hugging Face environment for one test and restores it afterwards.
class ModelPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kVars) {
      const char* value = getenv(name);
      saved_.push_back(value ? std::optional<std::string>(value) : std::nullopt);
      unsetenv(name);
    }
    setenv("HF_HUB_CACHE", cache().c_str(), 1);
  }

  void TearDown() override {
    for (size_t i = 0; i < std::size(kVars); ++i) {
      if (saved_[i]) {
        setenv(kVars[i], saved_[i]->c_str(), 1);
      } else {
        unsetenv(kVars[i]);
      }
    }
  }

  fs::path cache() const { return root_.path() / "hub"; }

  // Creates models--org--name/snapshots/<rev>/config.json under `hub`.
  fs::path AddSnapshot(const fs::path& hub, const std::string& repo, const std::string& rev,
                       bool with_config = true) {
    const fs::path snapshot = hub / repo / "snapshots" / rev;
    fs::create_directories(snapshot);
    if (with_config) {
      EXPECT_TRUE(test::WriteFile(snapshot / "config.json", "{}").ok());
    }
    return snapshot;
  }

  void SetRef(const fs::path& hub, const std::string& repo, const std::string& rev) {
    fs::create_directories(hub / repo / "refs");
    ASSERT_TRUE(test::WriteFile(hub / repo / "refs" / "main", rev).ok());
  }

  static constexpr const char* kVars[] = {"HF_HUB_CACHE", "HF_HOME", "HOME"};
  std::vector<std::optional<std::string>> saved_;
  test::TempDir root_;
};

TEST_F(ModelPathTest, ExistingDirectoryIsReturnedAsIs) {
  auto path = ResolveModelPath(root_.path().string());
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root_.path());
}

TEST_F(ModelPathTest, RefsMainPicksTheSnapshot) {
  const std::string repo = "models--google--vaultgemma-1b";
  AddSnapshot(cache(), repo, "0123abcd");
  const fs::path want = AddSnapshot(cache(), repo, "feedbeef");
  SetRef(cache(), repo, "feedbeef\n");
  auto path = ResolveModelPath("google/vaultgemma-1b");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, want);
}

TEST_F(ModelPathTest, WithoutRefsTheNewestSnapshotWins) {
  const std::string repo = "models--org--name";
  const fs::path old_one = AddSnapshot(cache(), repo, "aaaa");
  const fs::path new_one = AddSnapshot(cache(), repo, "bbbb");
  const auto now = fs::file_time_type::clock::now();
  fs::last_write_time(old_one, now - std::chrono::hours(2));
  fs::last_write_time(new_one, now - std::chrono::hours(1));
  auto path = ResolveModelPath("org/name");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, new_one);

  // refs/main naming a snapshot that is not there falls back to the scan.
  SetRef(cache(), repo, "cccc");
  path = ResolveModelPath("org/name");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, new_one);

  // Snapshots without config.json (interrupted downloads) are skipped.
  const fs::path partial = AddSnapshot(cache(), repo, "dddd", /*with_config=*/false);
  fs::last_write_time(partial, now);
  path = ResolveModelPath("org/name");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, new_one);
}

TEST_F(ModelPathTest, SnapshotWithoutConfigIsNotFound) {
  AddSnapshot(cache(), "models--org--name", "aaaa", /*with_config=*/false);
  auto path = ResolveModelPath("org/name");
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(path.status().message()), HasSubstr("huggingface-cli download org/name"));
}

TEST_F(ModelPathTest, MissingIdSaysHowToDownload) {
  auto path = ResolveModelPath("google/vaultgemma-1b");
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(path.status().message(),
            "model 'google/vaultgemma-1b' is not a directory and is not in the Hugging Face "
            "cache (" +
                cache().string() +
                "); download it with: huggingface-cli download google/vaultgemma-1b");
}

TEST_F(ModelPathTest, HfHomeAndHomeFallbacks) {
  unsetenv("HF_HUB_CACHE");
  setenv("HF_HOME", (root_.path() / "hf").c_str(), 1);
  const fs::path in_hf_home = AddSnapshot(root_.path() / "hf" / "hub", "models--org--name", "rev1");
  auto path = ResolveModelPath("org/name");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, in_hf_home);

  unsetenv("HF_HOME");
  setenv("HOME", (root_.path() / "home").c_str(), 1);
  const fs::path in_home = AddSnapshot(root_.path() / "home" / ".cache" / "huggingface" / "hub",
                                       "models--org--name", "rev2");
  path = ResolveModelPath("org/name");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, in_home);

  unsetenv("HOME");
  path = ResolveModelPath("org/name");
  ASSERT_FALSE(path.ok());
  EXPECT_THAT(std::string(path.status().message()), HasSubstr("huggingface-cli download"));
}

TEST_F(ModelPathTest, PathsThatAreNotIds) {
  auto empty = ResolveModelPath("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);

  for (const std::string arg : {"/no/such/dir", "./org/name", "a/b/c", "nothing", "../x"}) {
    auto path = ResolveModelPath(arg);
    ASSERT_FALSE(path.ok()) << arg;
    EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(path.status().message(), arg + ": no such directory");
  }
  const fs::path file = root_.path() / "file";
  ASSERT_TRUE(test::WriteFile(file, "x").ok());
  auto not_dir = ResolveModelPath(file.string());
  ASSERT_FALSE(not_dir.ok());
  EXPECT_EQ(not_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(not_dir.status().message()), HasSubstr("is not a directory"));
}

}  // namespace
}  // namespace vg::engine
