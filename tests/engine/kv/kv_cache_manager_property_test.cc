// Property test for KvCacheManager: random interleavings of the engine's calls (begin with
// prompts drawn from shared prefixes under a few salts, ensure capacity, compute and register,
// decode, preempt by recompute, end), checking the manager's own invariants after every call and
// an independent model:
//  - a shadow of each block's contents (the salt and token prefix the KV positions were computed
//    for) shows every prefix hit reads exactly the prompt's tokens under the same salt, and no
//    live sequence's computed blocks are ever overwritten;
//  - blocks shared by live sequences sit at the same position with identical prefixes;
//  - a block is only written while exclusively owned;
//  - completeness: while no block has been evicted since a live sequence registered its blocks,
//    a prompt under the same salt hits at least the full blocks it shares with it;
//  - used == distinct blocks in live tables; all-or-nothing allocation; at the end nothing is used.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/kv/kv_cache_manager.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

struct Content {
  std::string salt;
  std::vector<int32_t> tokens;  // the whole prefix up to the end of what the block holds
  bool operator==(const Content&) const = default;
};

struct LiveSequence {
  std::string salt;
  std::vector<int32_t> tokens;
  int32_t num_computed = 0;
  int32_t table_blocks = 0;  // model of the table length
  // Completeness bookkeeping: tokens known registered, and the eviction count then.
  int32_t registered_tokens = 0;
  int64_t registered_epoch = 0;
};

struct Config {
  int32_t num_blocks;
  int32_t block_size;
  bool prefix_caching;
};

class Simulation {
 public:
  Simulation(const Config& config, uint32_t seed) : config_(config), rng_(seed) {
    auto manager = KvCacheManager::Create({.num_blocks = config.num_blocks,
                                           .block_size = config.block_size,
                                           .enable_prefix_caching = config.prefix_caching});
    EXPECT_TRUE(manager.ok());
    manager_ = *std::move(manager);
    shadow_.resize(config.num_blocks);
    for (int p = 0; p < 3; ++p) {
      std::vector<int32_t> prefix(Uniform(0, 4 * config.block_size));
      for (int32_t& t : prefix) t = Uniform(0, kVocab - 1);
      prefixes_.push_back(prefix);
    }
  }

  // How much of the interesting behaviour a run exercised.
  struct Coverage {
    int64_t hit_tokens = 0;
    int64_t bounded_hits = 0;
    int64_t exhaustions = 0;
    int64_t evictions = 0;
  };
  Coverage coverage() const {
    return {hit_tokens_, bounded_hits_, exhaustions_, manager_->Stats().evictions};
  }

  void Run(int num_ops) {
    for (int op = 0; op < num_ops && !::testing::Test::HasFailure(); ++op) {
      const int choice = Uniform(0, 99);
      if (choice < 22) {
        BeginNew();
      } else if (choice < 30) {
        Resume();
      } else if (choice < 80) {
        Step();
      } else if (choice < 88) {
        Preempt();
      } else {
        End();
      }
      CheckAll();
    }
    while (!live_.empty()) EndSequence(live_.begin()->first);
    waiting_.clear();
    CheckAll();
    const KvCacheStats stats = manager_->Stats();
    EXPECT_EQ(stats.used, 0);
    EXPECT_EQ(stats.cached + stats.free, stats.total);
    EXPECT_EQ(manager_->NumAllocatableBlocks(), stats.total);
    if (!config_.prefix_caching) {
      EXPECT_EQ(stats.cached, 0);
    }
  }

 private:
  static constexpr int32_t kVocab = 6;
  static constexpr int kMaxLive = 6;

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int32_t B() const { return config_.block_size; }

  std::vector<int32_t> MakePrompt() {
    std::vector<int32_t> prompt = prefixes_[Uniform(0, static_cast<int>(prefixes_.size()) - 1)];
    const int suffix = Uniform(prompt.empty() ? 1 : 0, 2 * B());
    for (int i = 0; i < suffix; ++i) prompt.push_back(Uniform(0, kVocab - 1));
    return prompt;
  }

  void BeginNew() {
    if (live_.size() >= kMaxLive) return;
    if (!live_.empty() && Uniform(0, 9) == 0) {  // a live id is refused and nothing changes
      const KvCacheStats before = manager_->Stats();
      EXPECT_EQ(manager_->BeginSequence(live_.begin()->first, MakePrompt(), "").status().code(),
                absl::StatusCode::kAlreadyExists);
      EXPECT_EQ(manager_->Stats().used, before.used);
      return;
    }
    static const char* const kSalts[] = {"", "tenant-a", "tenant-b"};
    Begin(next_id_++, MakePrompt(), kSalts[Uniform(0, 2)]);
  }

  // A preempted sequence comes back with everything it had, prompt and generated tokens.
  void Resume() {
    if (waiting_.empty() || live_.size() >= kMaxLive) return;
    auto it = waiting_.begin();
    std::advance(it, Uniform(0, static_cast<int>(waiting_.size()) - 1));
    const int64_t id = it->first;
    LiveSequence seq = std::move(it->second);
    waiting_.erase(it);
    Begin(id, seq.tokens, seq.salt);
  }

  void Begin(int64_t id, std::vector<int32_t> tokens, const std::string& salt) {
    const int32_t expected = manager_->CachedPrefixLength(tokens, salt);
    const int64_t evictions = manager_->Stats().evictions;
    int32_t lower_bound = 0;
    if (config_.prefix_caching && !tokens.empty()) {
      const int32_t reusable = static_cast<int32_t>((tokens.size() - 1) / B()) * B();
      for (const auto& [other_id, other] : live_) {
        if (other.salt != salt || other.registered_epoch != evictions) continue;
        int32_t common = 0;
        while (common < other.registered_tokens && common < static_cast<int32_t>(tokens.size()) &&
               other.tokens[common] == tokens[common]) {
          ++common;
        }
        lower_bound = std::max(lower_bound, std::min(common / B() * B(), reusable));
      }
    }
    auto hit = manager_->BeginSequence(id, tokens, salt);
    ASSERT_TRUE(hit.ok()) << hit.status();
    ++begins_;
    hit_tokens_ += *hit;
    EXPECT_EQ(*hit, expected);
    EXPECT_EQ(*hit % B(), 0);
    EXPECT_TRUE(*hit == 0 || *hit < static_cast<int32_t>(tokens.size()));
    if (lower_bound > 0) ++bounded_hits_;
    EXPECT_GE(*hit, lower_bound) << "a prefix registered by a live sequence was missed";
    if (!config_.prefix_caching) {
      EXPECT_EQ(*hit, 0);
    }
    const std::span<const int32_t> table = manager_->BlockTable(id);
    ASSERT_EQ(static_cast<int32_t>(table.size()), *hit / B());
    for (int32_t i = 0; i < *hit / B(); ++i) {
      const Content want{salt, {tokens.begin(), tokens.begin() + (i + 1) * B()}};
      ASSERT_TRUE(shadow_[table[i]].has_value()) << "hit on a never-written block";
      EXPECT_EQ(*shadow_[table[i]], want) << "hit block " << table[i] << " holds other tokens";
    }
    LiveSequence seq{.salt = salt,
                     .tokens = std::move(tokens),
                     .num_computed = *hit,
                     .table_blocks = *hit / B(),
                     .registered_tokens = *hit,
                     .registered_epoch = evictions};
    live_.emplace(id, std::move(seq));
  }

  void Step() {
    if (live_.empty()) return;
    auto it = live_.begin();
    std::advance(it, Uniform(0, static_cast<int>(live_.size()) - 1));
    const int64_t id = it->first;
    LiveSequence& seq = it->second;
    if (seq.num_computed == static_cast<int32_t>(seq.tokens.size())) {
      // Decode: mostly a deterministic continuation, so equal prompts generate shared blocks.
      const int32_t last = seq.tokens.empty() ? 0 : seq.tokens.back();
      seq.tokens.push_back(Uniform(0, 4) == 0 ? Uniform(0, kVocab - 1) : (last * 5 + 1) % kVocab);
    }
    const int32_t remaining = static_cast<int32_t>(seq.tokens.size()) - seq.num_computed;
    const int32_t target = seq.num_computed + Uniform(1, std::min(remaining, 3 * B()));
    const int32_t want_blocks = (target + B() - 1) / B();
    const int32_t needed = std::max(0, want_blocks - seq.table_blocks);
    EXPECT_EQ(manager_->BlocksNeeded(id, target), needed);

    const KvCacheStats before = manager_->Stats();
    const std::span<const int32_t> old_span = manager_->BlockTable(id);
    const std::vector<int32_t> old_table(old_span.begin(), old_span.end());
    const absl::Status status = manager_->EnsureCapacity(id, target);
    if (!status.ok()) {
      ASSERT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
      ++exhaustions_;
      EXPECT_GT(needed, before.free + before.cached);
      const KvCacheStats after = manager_->Stats();
      EXPECT_EQ(after.used, before.used);
      EXPECT_EQ(after.free, before.free);
      EXPECT_EQ(after.cached, before.cached);
      EXPECT_EQ(after.evictions, before.evictions);
      const std::span<const int32_t> table = manager_->BlockTable(id);
      EXPECT_TRUE(std::equal(table.begin(), table.end(), old_table.begin(), old_table.end()));
      return;
    }
    EXPECT_LE(needed, before.free + before.cached);
    seq.table_blocks = std::max(seq.table_blocks, want_blocks);
    const std::span<const int32_t> table = manager_->BlockTable(id);
    ASSERT_EQ(static_cast<int32_t>(table.size()), seq.table_blocks);
    ASSERT_TRUE(std::equal(old_table.begin(), old_table.end(), table.begin()));
    for (size_t i = old_table.size(); i < table.size(); ++i) shadow_[table[i]].reset();

    // Compute positions [num_computed, target): only into blocks nobody else holds.
    for (int32_t i = seq.num_computed / B(); i * B() < target; ++i) {
      const int32_t block = table[i];
      for (const auto& [other_id, other] : live_) {
        if (other_id == id) continue;
        const std::span<const int32_t> other_table = manager_->BlockTable(other_id);
        ASSERT_EQ(std::count(other_table.begin(), other_table.end(), block), 0)
            << "sequence " << id << " writes block " << block << " held by " << other_id;
      }
      const int32_t end = std::min((i + 1) * B(), target);
      shadow_[block] = Content{seq.salt, {seq.tokens.begin(), seq.tokens.begin() + end}};
    }
    seq.num_computed = target;

    if (Uniform(0, 9) < 8) {  // registration sometimes lags a step behind
      const int32_t reported = Uniform(0, 5) == 0 ? Uniform(0, target) : target;
      manager_->CacheComputedBlocks(id, seq.tokens, reported);
      if (reported / B() * B() >= seq.registered_tokens ||
          seq.registered_epoch != manager_->Stats().evictions) {
        seq.registered_tokens = reported / B() * B();
        seq.registered_epoch = manager_->Stats().evictions;
      }
    }
  }

  void Preempt() {
    if (live_.empty()) return;
    auto it = live_.begin();
    std::advance(it, Uniform(0, static_cast<int>(live_.size()) - 1));
    const int64_t id = it->first;
    waiting_.emplace(id, std::move(it->second));
    live_.erase(it);
    manager_->EndSequence(id);
  }

  void End() {
    if (Uniform(0, 9) == 0) manager_->EndSequence(-1 - Uniform(0, 5));  // unknown: ignored
    if (live_.empty()) return;
    auto it = live_.begin();
    std::advance(it, Uniform(0, static_cast<int>(live_.size()) - 1));
    EndSequence(it->first);
  }

  void EndSequence(int64_t id) {
    live_.erase(id);
    manager_->EndSequence(id);
    EXPECT_TRUE(manager_->BlockTable(id).empty());
  }

  void CheckAll() {
    const absl::Status invariants = manager_->CheckInvariants();
    ASSERT_TRUE(invariants.ok()) << invariants;
    // Block -> (sequence, position) of each live holder.
    std::map<int32_t, std::vector<std::pair<int64_t, int32_t>>> holders;
    for (const auto& [id, seq] : live_) {
      const std::span<const int32_t> table = manager_->BlockTable(id);
      ASSERT_EQ(static_cast<int32_t>(table.size()), seq.table_blocks) << "sequence " << id;
      for (int32_t i = 0; i < static_cast<int32_t>(table.size()); ++i) {
        holders[table[i]].emplace_back(id, i);
        // Everything computed is still there (nobody overwrote it).
        const int32_t end = std::min((i + 1) * B(), seq.num_computed);
        if (end <= i * B()) continue;
        ASSERT_TRUE(shadow_[table[i]].has_value());
        EXPECT_EQ(*shadow_[table[i]],
                  (Content{seq.salt, {seq.tokens.begin(), seq.tokens.begin() + end}}))
            << "sequence " << id << " block " << i << " (id " << table[i] << ") was overwritten";
      }
    }
    for (const auto& [block, who] : holders) {
      if (who.size() < 2) continue;
      const auto& [first_id, position] = who.front();
      const LiveSequence& first = live_.at(first_id);
      const int32_t end = (position + 1) * B();
      for (const auto& [id, pos] : who) {
        const LiveSequence& seq = live_.at(id);
        EXPECT_EQ(pos, position) << "block " << block << " shared at different positions";
        EXPECT_EQ(seq.salt, first.salt) << "block " << block << " shared across salts";
        ASSERT_GE(seq.num_computed, end) << "shared block " << block << " is not computed";
        EXPECT_TRUE(std::equal(seq.tokens.begin(), seq.tokens.begin() + end, first.tokens.begin()))
            << "block " << block << " shared by different prefixes";
      }
    }
    const KvCacheStats stats = manager_->Stats();
    EXPECT_EQ(stats.used, static_cast<int32_t>(holders.size()));
    EXPECT_EQ(manager_->NumAllocatableBlocks(), stats.total - stats.used);
    if (!config_.prefix_caching) {
      EXPECT_EQ(stats.cached, 0);
    }
  }

  const Config config_;
  std::mt19937 rng_;
  std::unique_ptr<KvCacheManager> manager_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::vector<std::optional<Content>> shadow_;  // nullopt: allocated, not yet written
  std::map<int64_t, LiveSequence> live_;
  std::map<int64_t, LiveSequence> waiting_;
  int64_t next_id_ = 1;
  int64_t begins_ = 0;
  int64_t hit_tokens_ = 0;
  int64_t bounded_hits_ = 0;
  int64_t exhaustions_ = 0;
};

void PrintTo(const Config& config, std::ostream* os) {
  *os << config.num_blocks << " blocks of " << config.block_size << ", prefix caching "
      << (config.prefix_caching ? "on" : "off");
}

class KvCacheManagerPropertyTest : public ::testing::TestWithParam<Config> {};

TEST_P(KvCacheManagerPropertyTest, RandomInterleavingsKeepEveryInvariant) {
  Simulation::Coverage total;
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    Simulation simulation(GetParam(), seed);
    simulation.Run(4000);
    if (HasFailure()) return;
    const Simulation::Coverage run = simulation.coverage();
    total.hit_tokens += run.hit_tokens;
    total.bounded_hits += run.bounded_hits;
    total.exhaustions += run.exhaustions;
    total.evictions += run.evictions;
  }
  // The workload is only worth something if it reaches the interesting paths.
  EXPECT_GT(total.exhaustions, 0) << "never ran out of blocks";
  if (GetParam().prefix_caching) {
    EXPECT_GT(total.hit_tokens, 0) << "never hit the cache";
    EXPECT_GT(total.bounded_hits, 0) << "the completeness check never applied";
    EXPECT_GT(total.evictions, 0) << "never evicted";
  }
  std::cout << "coverage: hit_tokens=" << total.hit_tokens << " bounded_hits=" << total.bounded_hits
            << " exhaustions=" << total.exhaustions << " evictions=" << total.evictions << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Configs, KvCacheManagerPropertyTest,
    ::testing::Values(Config{.num_blocks = 24, .block_size = 4, .prefix_caching = true},
                      Config{.num_blocks = 10, .block_size = 2, .prefix_caching = true},
                      Config{.num_blocks = 40, .block_size = 1, .prefix_caching = true},
                      Config{.num_blocks = 16, .block_size = 4, .prefix_caching = false}),
    [](const ::testing::TestParamInfo<Config>& info) {
      return "Blocks" + std::to_string(info.param.num_blocks) + "Size" +
             std::to_string(info.param.block_size) +
             (info.param.prefix_caching ? "Cached" : "Uncached");
    });

}  // namespace
}  // namespace vg::engine
