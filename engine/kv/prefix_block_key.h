// PrefixBlockKey: the identity of one registered prefix-cache block, private to engine/kv/.
//
// A full block of `block_size` token ids is identified by (parent registration id, cache salt,
// its token ids). The parent id is the registration id of the block before it in the chain (0 for
// a sequence's first block). Registration ids are never reused, so the key of a block names its
// whole token prefix exactly: equality compares every field, the hash only buckets. The index is
// a flat_hash_map with heterogeneous lookup, so probing with a view copies no tokens.
#ifndef VG_ENGINE_KV_PREFIX_BLOCK_KEY_H_
#define VG_ENGINE_KV_PREFIX_BLOCK_KEY_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace vg::engine {

// Non-owning form, used for lookups.
struct PrefixBlockKeyView {
  uint64_t parent_id = 0;
  std::string_view salt;
  std::span<const int32_t> tokens;

  friend bool operator==(const PrefixBlockKeyView& a, const PrefixBlockKeyView& b) {
    return a.parent_id == b.parent_id && a.salt == b.salt && std::ranges::equal(a.tokens, b.tokens);
  }

  template <typename H>
  friend H AbslHashValue(H h, const PrefixBlockKeyView& key) {
    // Debian's Abseil has its own string_view; hash through it explicitly.
    h = H::combine(std::move(h), key.parent_id,
                   absl::string_view(key.salt.data(), key.salt.size()));
    h = H::combine_contiguous(std::move(h), key.tokens.data(), key.tokens.size());
    return H::combine(std::move(h), key.tokens.size());
  }
};

// Owning form, stored in the index and on the registered block.
struct PrefixBlockKey {
  uint64_t parent_id = 0;
  std::string salt;
  std::vector<int32_t> tokens;

  PrefixBlockKey() = default;
  explicit PrefixBlockKey(const PrefixBlockKeyView& view)
      : parent_id(view.parent_id),
        salt(view.salt),
        tokens(view.tokens.begin(), view.tokens.end()) {}

  PrefixBlockKeyView view() const { return {parent_id, salt, tokens}; }

  friend bool operator==(const PrefixBlockKey& a, const PrefixBlockKey& b) {
    return a.view() == b.view();
  }
  template <typename H>
  friend H AbslHashValue(H h, const PrefixBlockKey& key) {
    return H::combine(std::move(h), key.view());
  }
};

inline PrefixBlockKeyView ToPrefixBlockKeyView(const PrefixBlockKeyView& view) { return view; }
inline PrefixBlockKeyView ToPrefixBlockKeyView(const PrefixBlockKey& key) { return key.view(); }

// Transparent hash and equality: owning and view keys hash identically.
struct PrefixBlockKeyHash {
  using is_transparent = void;
  template <typename K>
  size_t operator()(const K& key) const {
    return absl::Hash<PrefixBlockKeyView>{}(ToPrefixBlockKeyView(key));
  }
};
struct PrefixBlockKeyEq {
  using is_transparent = void;
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return ToPrefixBlockKeyView(a) == ToPrefixBlockKeyView(b);
  }
};

// Registered key -> the block holding it.
using PrefixBlockIndex =
    absl::flat_hash_map<PrefixBlockKey, int32_t, PrefixBlockKeyHash, PrefixBlockKeyEq>;

}  // namespace vg::engine

#endif  // VG_ENGINE_KV_PREFIX_BLOCK_KEY_H_
