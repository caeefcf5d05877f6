// One-query attention over a bf16 KV cache: fast mode's decode steps on a CPU (barkkit_bark.native).
//
// PyTorch has no CPU kernel that attends over bf16 keys and values at fp32 speed, so fast mode upcast the slots it
// read every step (a new fp32 copy of the whole cache, twice the bytes it read) and then read that copy again in
// scaled_dot_product_attention. Here each key and value row is widened in registers as it is read (bf16 is the high
// half of an fp32), so a step reads the cache once, at half the bytes, and writes nothing but the output.
//
// Each (row, head) pair is computed by one thread from start to end, in an order that depends on nothing but its own
// inputs: a row's result is the same alone and in a batch, on any number of threads.
//
// Written with 8-lane vectors (vec8.h): the work is bound by reading the cache, so wider vectors would not pay.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "vec8.h"

namespace {

using namespace barkkit;

// The sums of a[0..7] and b[0..7] pairwise side by side: {a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7}.
inline v8f pair_sums(v8f a, v8f b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// Scores of keys [s, s + 8): q (C chunks of 8 lanes, pre-scaled) against 8 key rows `row_stride` apart. The eight
// dot products run side by side (eight independent chains of multiply-adds) and are summed lane-wise at the end.
template <int C>
inline v8f eight_scores(const v8f* qv, const uint16_t* keys, int64_t row_stride) {
  v8f acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = qv[0] * load_bf16(keys + j * row_stride);
  for (int c = 1; c < C; ++c) {
    for (int j = 0; j < kLanes; ++j) acc[j] += qv[c] * load_bf16(keys + j * row_stride + c * kLanes);
  }
  const v8f s01 = pair_sums(acc[0], acc[1]), s23 = pair_sums(acc[2], acc[3]);
  const v8f s45 = pair_sums(acc[4], acc[5]), s67 = pair_sums(acc[6], acc[7]);
  const v8f s0123 = pair_sums(s01, s23), s4567 = pair_sums(s45, s67);
  return __builtin_shufflevector(s0123, s4567, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(s0123, s4567, 4, 5, 6, 7, 12, 13, 14, 15);
}

// One (row, head): q (hs = 8 C,) fp32, keys and values (S, hs) bf16 rows `row_stride` apart -> out (hs,) fp32.
template <int C>
void attend_one(const float* q, const uint16_t* keys, const uint16_t* values, int64_t row_stride, int64_t n_keys,
                float scale, float* out, std::vector<float>& scores) {
  v8f qv[C];
  for (int c = 0; c < C; ++c) qv[c] = load(q + c * kLanes) * scale;
  const int64_t full = n_keys / kLanes * kLanes, padded = (n_keys + kLanes - 1) / kLanes * kLanes;
  scores.resize(padded);
  v8f top = broadcast(-std::numeric_limits<float>::infinity());
  for (int64_t s = 0; s < full; s += kLanes) {
    const v8f x = eight_scores<C>(qv, keys + s * row_stride, row_stride);
    store(&scores[s], x);
    top = x > top ? x : top;
  }
  float best = std::max({top[0], top[1], top[2], top[3], top[4], top[5], top[6], top[7]});
  for (int64_t s = full; s < n_keys; ++s) {  // the last n_keys % 8 keys one at a time
    const uint16_t* k = keys + s * row_stride;
    v8f acc = qv[0] * load_bf16(k);
    for (int c = 1; c < C; ++c) acc += qv[c] * load_bf16(k + c * kLanes);
    scores[s] = sum(acc);
    best = std::max(best, scores[s]);
  }
  for (int64_t s = n_keys; s < padded; ++s) scores[s] = best;  // padding lanes: masked below
  v8f total = broadcast(0.0f);
  for (int64_t s = 0; s < padded; s += kLanes) {
    v8f w = exp_nonpositive(load(&scores[s]) - best);
    if (s + kLanes > n_keys) {  // the padding lanes weigh nothing
      for (int64_t lane = n_keys - s; lane < kLanes; ++lane) w[lane] = 0.0f;
    }
    store(&scores[s], w);
    total += w;
  }
  v8f acc[C];
  for (int c = 0; c < C; ++c) acc[c] = broadcast(0.0f);
  for (int64_t s = 0; s < n_keys; ++s) {
    const uint16_t* v = values + s * row_stride;
    const v8f w = broadcast(scores[s]);
    for (int c = 0; c < C; ++c) acc[c] += w * load_bf16(v + c * kLanes);
  }
  const float inverse = 1.0f / sum(total);
  for (int c = 0; c < C; ++c) store(out + c * kLanes, acc[c] * inverse);
}

// q (B, nh, 1, hs) fp32, its last dim contiguous; k, v (B, nh, S_max, hs) bf16, contiguous; row b attends to the
// cache slots [first[b], stop) -> (B, 1, nh, hs) fp32 (heads side by side, as the output projection reads them).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::IntArrayRef first,
                            int64_t stop) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "decode_attention runs on the CPU");
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kFloat && q.stride(3) == 1,
              "q must be (B, nh, 1, hs) fp32 with a contiguous last dim");
  TORCH_CHECK(k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16 && k.is_contiguous() &&
                  v.is_contiguous() && k.sizes() == v.sizes() && k.dim() == 4,
              "k and v must be contiguous (B, nh, S, hs) bf16 caches of one shape");
  const int64_t B = q.size(0), nh = q.size(1), hs = q.size(3);
  TORCH_CHECK(k.size(0) == B && k.size(1) == nh && k.size(3) == hs, "q and the cache disagree in shape");
  using Attend = void (*)(const float*, const uint16_t*, const uint16_t*, int64_t, int64_t, float, float*,
                          std::vector<float>&);
  Attend attend = nullptr;
  switch (hs) {  // head sizes compiled (native.HEAD_SIZES): both Bark models' 64, and the tests' tiny models'
    case 8: attend = attend_one<1>; break;
    case 16: attend = attend_one<2>; break;
    case 32: attend = attend_one<4>; break;
    case 64: attend = attend_one<8>; break;
    case 128: attend = attend_one<16>; break;
  }
  TORCH_CHECK(attend != nullptr, "head size must be one of 8, 16, 32, 64, 128");
  TORCH_CHECK(static_cast<int64_t>(first.size()) == B, "one first slot per row");
  TORCH_CHECK(0 < stop && stop <= k.size(2), "stop must lie in (0, cache length]");
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(0 <= first[b] && first[b] < stop, "first slots must lie before stop");
  at::Tensor out = at::empty({B, 1, nh, hs}, q.options().memory_format(at::MemoryFormat::Contiguous));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const float* qp = q.data_ptr<float>();
  const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  float* op = out.data_ptr<float>();
  const int64_t q_b = q.stride(0), q_h = q.stride(1), S_max = k.size(2);
  std::vector<int64_t> firsts(first.begin(), first.end());
  at::parallel_for(0, B * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nh, h = i % nh;
      const int64_t offset = (i * S_max + firsts[b]) * hs;
      attend(qp + b * q_b + h * q_h, kp + offset, vp + offset, hs, stop - firsts[b], scale, op + (b * nh + h) * hs,
             scores);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(barkkit_native, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, int[] first, int stop) -> Tensor", &decode_attention);
}
