#include "engine/tokenizer/prefix_matcher.h"

#include <algorithm>

namespace vg::engine {

PrefixMatcher::PrefixMatcher(std::vector<std::string_view> keys) {
  std::erase_if(keys, [](std::string_view k) { return k.empty(); });
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  empty_ = keys.empty();
  nodes_.emplace_back();
  Build(keys, 0, keys.size(), 0, 0);
  for (uint32_t e = 0; e < nodes_[0].edge_count; ++e) {
    const Edge& edge = edges_[nodes_[0].edge_begin + e];
    root_children_[edge.byte] = edge.child;
  }
}

// keys[lo, hi) are sorted, distinct and share their first `depth` bytes; `node` stands for them.
void PrefixMatcher::Build(const std::vector<std::string_view>& keys, size_t lo, size_t hi,
                          size_t depth, uint32_t node) {
  if (lo < hi && keys[lo].size() == depth) {
    nodes_[node].terminal = true;
    ++lo;
  }
  // Group the remaining keys by their byte at `depth`; each group becomes one child.
  std::vector<std::pair<size_t, size_t>> groups;
  for (size_t i = lo; i < hi;) {
    size_t j = i + 1;
    while (j < hi && keys[j][depth] == keys[i][depth]) ++j;
    groups.emplace_back(i, j);
    i = j;
  }
  const uint32_t edge_begin = static_cast<uint32_t>(edges_.size());
  nodes_[node].edge_begin = edge_begin;
  nodes_[node].edge_count = static_cast<uint32_t>(groups.size());
  for (const auto& [i, j] : groups) {
    edges_.push_back({static_cast<uint8_t>(keys[i][depth]), static_cast<uint32_t>(nodes_.size())});
    nodes_.emplace_back();
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    Build(keys, groups[g].first, groups[g].second, depth + 1, edges_[edge_begin + g].child);
  }
}

size_t PrefixMatcher::LongestMatch(std::string_view text) const {
  if (empty_ || text.empty()) return 0;
  uint32_t node = root_children_[static_cast<uint8_t>(text[0])];
  if (node == 0) return 0;
  size_t best = nodes_[node].terminal ? 1 : 0;
  for (size_t i = 1; i < text.size(); ++i) {
    const Node& n = nodes_[node];
    const auto begin = edges_.begin() + n.edge_begin;
    const auto end = begin + n.edge_count;
    const uint8_t byte = static_cast<uint8_t>(text[i]);
    const auto it =
        std::lower_bound(begin, end, byte, [](const Edge& e, uint8_t b) { return e.byte < b; });
    if (it == end || it->byte != byte) break;
    node = it->child;
    if (nodes_[node].terminal) best = i + 1;
  }
  return best;
}

}  // namespace vg::engine
