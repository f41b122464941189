// Fuzzes ParseModelConfig (engine/model/config.h): config.json text as a checkpoint supplies it.
//
// Beyond not crashing, a malformed file must be INVALID_ARGUMENT, and an accepted config must hold
// the invariants the rest of the engine relies on without checking again (sizes positive and
// bounded, heads divisible, one layer type per layer, token ids inside the vocabulary).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<vg::engine::ModelConfig> parsed = vg::engine::ParseModelConfig(text);
  if (!parsed.ok()) {
    VG_FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
                  parsed.status().ToString());
    return 0;
  }
  const vg::engine::ModelConfig& c = *parsed;
  constexpr int64_t kMax = int64_t{1} << 24;
  for (int64_t v : {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                    c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                    c.max_position_embeddings, c.sliding_window}) {
    VG_FUZZ_CHECK(v > 0 && v <= kMax, absl::StrCat("size ", v));
  }
  VG_FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "heads");
  VG_FUZZ_CHECK(c.QueriesPerKvHead() >= 1, "heads");
  VG_FUZZ_CHECK(c.head_dim % 2 == 0, "head_dim");
  VG_FUZZ_CHECK(static_cast<int64_t>(c.layer_types.size()) == c.num_hidden_layers, "layer_types");
  for (double v : {c.rms_norm_eps, c.rope_theta, c.query_pre_attn_scalar}) {
    VG_FUZZ_CHECK(v > 0 && std::isfinite(v), absl::StrCat("positive ", v));
  }
  for (const auto& cap : {c.attn_logit_softcapping, c.final_logit_softcapping}) {
    VG_FUZZ_CHECK(!cap.has_value() || (*cap > 0 && std::isfinite(*cap)), "soft cap");
  }
  VG_FUZZ_CHECK(c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size, "bos_token_id");
  VG_FUZZ_CHECK(c.pad_token_id == -1 || (c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size),
                "pad_token_id");
  VG_FUZZ_CHECK(!c.eos_token_ids.empty(), "eos_token_ids");
  for (int64_t id : c.eos_token_ids) {
    VG_FUZZ_CHECK(id >= 0 && id < c.vocab_size, "eos_token_id");
    VG_FUZZ_CHECK(c.IsEos(id), "IsEos");
  }
  VG_FUZZ_CHECK(c.model_type == "vaultgemma", c.model_type);
  VG_FUZZ_CHECK(c.hidden_activation == "gelu_pytorch_tanh", c.hidden_activation);
  return 0;
}
