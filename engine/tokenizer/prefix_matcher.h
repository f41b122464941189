// PrefixMatcher: longest-prefix search over a fixed set of byte strings, used for user-defined
// symbols (matched longest-first and frozen before BPE, and copied unnormalized by the normalizer;
// spm's PrefixMatcher). A compact byte trie: nodes with sorted edge ranges, plus a direct table for
// the root so that text not starting any key costs one array load per position.
//
// Thread-safety: immutable after construction; const methods may be called concurrently.
#ifndef VG_ENGINE_TOKENIZER_PREFIX_MATCHER_H_
#define VG_ENGINE_TOKENIZER_PREFIX_MATCHER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace vg::engine {

class PrefixMatcher {
 public:
  // Keys may repeat; empty keys are ignored. The strings are copied into the trie.
  explicit PrefixMatcher(std::vector<std::string_view> keys);

  bool empty() const { return empty_; }

  // Byte length of the longest key that is a prefix of `text`; 0 when none is.
  size_t LongestMatch(std::string_view text) const;

 private:
  struct Node {
    uint32_t edge_begin = 0;
    uint32_t edge_count = 0;
    bool terminal = false;
  };
  struct Edge {
    uint8_t byte;
    uint32_t child;
  };

  void Build(const std::vector<std::string_view>& keys, size_t lo, size_t hi, size_t depth,
             uint32_t node);

  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::array<uint32_t, 256> root_children_{};  // 0 = no edge (the root is node 0)
  bool empty_ = true;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_PREFIX_MATCHER_H_
