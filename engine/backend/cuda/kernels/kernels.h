// CUDA kernels of the VaultGemma forward pass (issue 7), callable from plain C++.
//
// Every function enqueues work on `stream` and returns at once (asynchronous); it returns the
// launch error (cudaGetLastError) as a cudaError_t, never aborts. All pointers are device
// pointers unless noted. BF16 tensors are passed as `uint16_t*` holding the raw bfloat16 bits
// (the checkpoint's layout), so callers need no CUDA header beyond cuda_runtime_api.h.
// Tensors are dense row-major; shapes are given as [outer]...[inner].
// Numerics follow /work/shared/reference/vaultgemma-architecture.md: float32 math throughout.
//
// KV cache (per layer, K and V separately): BF16 [num_blocks][block_size][num_kv_heads][head_dim],
// the same layout as engine/backend/cpu/kv_cache.h. A sequence's block table entry i holds its
// positions [i*block_size, (i+1)*block_size). K is stored after RoPE.
#ifndef VG_ENGINE_BACKEND_CUDA_KERNELS_KERNELS_H_
#define VG_ENGINE_BACKEND_CUDA_KERNELS_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vg::engine::cuda {

// sqrt(hidden_size) as the model multiplies by it: rounded to bfloat16 first when the
// activations are bf16 (the reference casts the constant to the activation dtype). Host function.
float EmbeddingNormalizer(int hidden_size, bool bf16_activations);

// out[t][h] = float(table[ids[t]][h]) * normalizer.
// table: BF16 [vocab][hidden]; ids: int32 [num_tokens], each in [0, vocab) (precondition, not
// checked on the device); out: float32 [num_tokens][hidden].
cudaError_t EmbedTokens(const uint16_t* table, const int32_t* ids, int num_tokens, int hidden,
                        float normalizer, float* out, cudaStream_t stream);

// The residual add fused with the next RMSNorm, VaultGemma style (no post-norms):
//   if x != nullptr: residual[t] += x[t]   (in place: the new residual stream h = r + f(h))
//   normed[t] = residual[t] * rsqrt(mean(residual[t]^2) + eps) * (1 + weight)
// residual: float32 [num_tokens][hidden] (read/write); x: float32 [num_tokens][hidden] or null;
// weight: float32 [hidden] (stored centred on 0); normed: BF16 [num_tokens][hidden] (GEMM input)
// and/or normed_f32: float32 [num_tokens][hidden]; either may be null. normed must not alias
// residual or x.
cudaError_t ResidualRmsNorm(float* residual, const float* x, const float* weight, int num_tokens,
                            int hidden, float eps, uint16_t* normed, float* normed_f32,
                            cudaStream_t stream);

// Rotate-half RoPE on q and k, then k and v written into the paged cache.
// q, k, v: float32 rows `row_stride` floats apart (the fused QKV projection [t][q | k | v] gives
// q = qkv, k = qkv + num_heads * head_dim, v = k + num_kv_heads * head_dim, row_stride = the
// fused width); each row holds [num_heads|num_kv_heads][head_dim]. q_out: float32 dense
// [num_tokens][num_heads][head_dim], the rotated queries (q_out == q is allowed when
// row_stride == num_heads * head_dim). positions: int32 [num_tokens]; slots: int64 [num_tokens],
// slot = physical_block * block_size + offset_in_block of that token's position (taken from its
// block table), or < 0 for a padding row whose k and v are not written; k_cache, v_cache: BF16
// [num_blocks][block_size][num_kv_heads][head_dim] of one layer. head_dim must be even.
// inv_freq[i] = rope_theta^(-2i/head_dim), angle = position * inv_freq[i] in float32.
cudaError_t RopeAndWriteKv(const float* q, const float* k, const float* v, int64_t row_stride,
                           const int32_t* positions, const int64_t* slots, int num_tokens,
                           int num_heads, int num_kv_heads, int head_dim, float rope_theta,
                           float* q_out, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t stream);

// Paged attention shapes shared by decode and prefill.
struct PagedAttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;  // divides num_heads (GQA: head h reads kv head h / group)
  int head_dim = 0;      // <= 512
  int block_size = 0;
  int max_blocks_per_seq = 0;  // row stride of block_tables
  float scale = 0.f;           // query_pre_attn_scalar^-0.5
  float logit_softcap = 0.f;   // scores = tanh(s/cap)*cap before softmax; 0 = no cap
  // > 0: a sliding-window layer; a row with context length len sees only the positions
  // [max(0, len - sliding_window), len) (transformers' mask: position p sees q - window < k <= q).
  // 0: full attention.
  int sliding_window = 0;
  int partition_size = 512;  // split-K: positions per partition (> 0, + head_dim <= 12224)
};

// Number of float32 elements of scratch PagedAttention needs (partial outputs, maxima, sums).
int64_t PagedAttentionScratchFloats(const PagedAttentionShape& shape, int num_queries,
                                    int max_context_len);

// Attention for query rows over the paged cache (the query's K/V must already be in the cache:
// call RopeAndWriteKv first). Query row r belongs to sequence query_seq[r] and sees the positions
// [0, context_lens[r]) of that sequence (causality is expressed by context_lens: decode gives one
// row per sequence with its full length; a prefill chunk gives one row per new token with
// position + 1). Split-K: each partition of partition_size positions is reduced in one block,
// then a second kernel combines partial max/sum/output. Decode rows use it; prefill chunks are
// better served by TiledPrefillAttention, which reads the sequence's K/V once per tile of rows.
// rows: null (the rows 0..num_queries-1) or int32 [num_queries], the query rows to compute (a
// subset, e.g. a step's decode rows; each in range and listed once); rows not listed are not
// written.
// q: float32 [*][num_heads][head_dim]; query_seq, context_lens: int32 [*] indexed by query row;
// each listed row's 0 <= len <= max_context_len (0: a padding row, whose output is 0), and
// len <= max_blocks_per_seq * block_size; block_tables: int32 [num_seqs][max_blocks_per_seq];
// k_cache, v_cache: BF16 cache of one layer; out: float32 [*][num_heads][head_dim] indexed by
// query row; scratch: PagedAttentionScratchFloats(shape, num_queries, max_context_len) floats.
cudaError_t PagedAttention(const PagedAttentionShape& shape, const float* q,
                           const int32_t* query_seq, const int32_t* context_lens,
                           const int32_t* rows, int num_queries, int max_context_len,
                           const int32_t* block_tables, const uint16_t* k_cache,
                           const uint16_t* v_cache, float* scratch, float* out,
                           cudaStream_t stream);

// The most query rows in one tile of TiledPrefillAttention.
inline constexpr int kPrefillTileRows = 16;

// Attention for the rows of prefill chunks, a tile at a time. Tile i covers the consecutive query
// rows [tiles[2i], tiles[2i] + tiles[2i+1]) (1 <= tiles[2i+1] <= kPrefillTileRows), all of ONE
// sequence (query_seq of the first row is used for the whole tile); row r sees the positions
// [lo_r, context_lens[r]) with lo_r = max(0, len_r - sliding_window) on sliding layers and 0
// otherwise, exactly as PagedAttention: the same scores (q.k * scale, then tanh(s/cap)*cap when
// logit_softcap > 0), the softmax in float32, output rows of context length 0 are 0. One block
// per (tile, kv head[, slice of its query heads]) streams the union of its rows' positions
// through shared memory kChunk (16) positions at a time, once, and every row x query head of the
// GQA group sharing that kv head uses them with an online (flash) softmax; no split-K, no
// scratch. Dynamic shared memory is ~(kPrefillTileRows * heads_per_block * (2 * head_dim + 19))
// floats + 64 * head_dim bytes: 149 KB for the 1B shape (all 4 heads of the group per block),
// so the kernel opts in (cudaFuncSetAttribute) up to the device's per-block opt-in maximum; when
// a whole group does not fit, a block takes the largest divisor of the group that does.
// partition_size and max_context_len play no part. q: float32 [*][num_heads][head_dim];
// query_seq, context_lens: int32 [*] by query row; tiles: int32 [num_tiles][2] (device);
// block_tables, k_cache, v_cache: as PagedAttention; out: float32 [*][num_heads][head_dim],
// only the tiles' rows are written. Returns cudaErrorInvalidValue for a bad shape or when no
// head fits in shared memory; num_tiles == 0 launches nothing.
cudaError_t TiledPrefillAttention(const PagedAttentionShape& shape, const float* q,
                                  const int32_t* query_seq, const int32_t* context_lens,
                                  const int32_t* tiles, int num_tiles, const int32_t* block_tables,
                                  const uint16_t* k_cache, const uint16_t* v_cache, float* out,
                                  cudaStream_t stream);

// out[t][i] = gelu_pytorch_tanh(gate[t][i]) * up[t][i], tanh approximation:
// 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))). gate, up: float32 rows `row_stride` floats
// apart, `intermediate` used per row (the fused gate/up projection [t][gate | up] gives
// up = gate + intermediate, row_stride = 2 * intermediate); out: BF16 dense
// [num_tokens][intermediate] (the down projection's input).
cudaError_t GeGlu(const float* gate, const float* up, int64_t row_stride, int num_tokens,
                  int intermediate, uint16_t* out, cudaStream_t stream);

// logits[r][j] = tanh(logits[r][j] / cap) * cap in place (cap > 0; with cap == 0 only argmax
// runs). If argmax != nullptr, argmax[r] = index of the largest capped logit of row r (the lowest
// index among ties). logits: float32 [num_rows][vocab]; argmax: int32 [num_rows].
cudaError_t FinalSoftcapArgmax(float* logits, int num_rows, int vocab, float cap, int32_t* argmax,
                               cudaStream_t stream);

// x[t][i] += bias[i] in place. x: float32 [num_rows][cols]; bias: float32 [cols].
cudaError_t AddBias(float* x, const float* bias, int num_rows, int cols, cudaStream_t stream);

// out[i] = in[rows[i]] for i < num_rows (a gather of float32 rows of `cols` elements).
// in: float32 [*][cols]; rows: int32 [num_rows], valid row indices of `in`; out: float32
// [num_rows][cols], not aliasing `in`.
cudaError_t GatherRows(const float* in, const int32_t* rows, int num_rows, int cols, float* out,
                       cudaStream_t stream);

// Conversion helpers for callers and tests (float32 <-> BF16 bits, round-to-nearest-even).
cudaError_t FloatToBf16(const float* in, int64_t count, uint16_t* out, cudaStream_t stream);

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_KERNELS_KERNELS_H_
