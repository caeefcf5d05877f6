// One-query attention over a bf16 or int8 KV cache: fast mode's decode steps on a CPU (barkkit_bark.native).
//
// PyTorch has no CPU kernel that attends over bf16 keys and values at fp32 speed, so fast mode upcast the slots it
// read every step (a new fp32 copy of the whole cache, twice the bytes it read) and then read that copy again in
// scaled_dot_product_attention. Here each key and value row is widened in registers as it is read (bf16 is the high
// half of an fp32), so a step reads the cache once, at half the bytes, and writes nothing but the output. The int8
// cache halves the bytes again: a row is widened from int8 and its scale (one per row, head and slot) multiplies its
// score (keys) or its softmax weight (values); the step's own key and value are quantized into the cache by the
// thread that then reads them.
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

#include "ops.h"
#include "vec8.h"

namespace {

using namespace barkkit;

// The sums of a[0..7] and b[0..7] pairwise side by side: {a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7}.
inline v8f pair_sums(v8f a, v8f b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// 8 cached values widened to fp32: bf16 (the high half of an fp32) or int8 (times its row's scale, applied later).
inline v8f widen(const uint16_t* p) { return load_bf16(p); }
inline v8f widen(const int8_t* p) { return load_i8(p); }

// Scores of keys [s, s + 8): q (C chunks of 8 lanes, pre-scaled) against 8 key rows `row_stride` apart. The eight
// dot products run side by side (eight independent chains of multiply-adds) and are summed lane-wise at the end.
template <int C, typename T>
inline v8f eight_scores(const v8f* qv, const T* keys, int64_t row_stride) {
  v8f acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = qv[0] * widen(keys + j * row_stride);
  for (int c = 1; c < C; ++c) {
    for (int j = 0; j < kLanes; ++j) acc[j] += qv[c] * widen(keys + j * row_stride + c * kLanes);
  }
  const v8f s01 = pair_sums(acc[0], acc[1]), s23 = pair_sums(acc[2], acc[3]);
  const v8f s45 = pair_sums(acc[4], acc[5]), s67 = pair_sums(acc[6], acc[7]);
  const v8f s0123 = pair_sums(s01, s23), s4567 = pair_sums(s45, s67);
  return __builtin_shufflevector(s0123, s4567, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(s0123, s4567, 4, 5, 6, 7, 12, 13, 14, 15);
}

// One (row, head): q (hs = 8 C,) fp32, keys and values (S, hs) bf16 or int8 rows `row_stride` apart (int8: each
// row times its k_scale / v_scale; bf16: none) -> out (hs,) fp32.
template <int C, typename T>
void attend_one(const float* q, const T* keys, const T* values, const float* k_scale, const float* v_scale,
                int64_t row_stride, int64_t n_keys, float scale, float* out, std::vector<float>& scores) {
  v8f qv[C];
  for (int c = 0; c < C; ++c) qv[c] = load(q + c * kLanes) * scale;
  const int64_t full = n_keys / kLanes * kLanes, padded = (n_keys + kLanes - 1) / kLanes * kLanes;
  scores.resize(padded);
  v8f top = broadcast(-std::numeric_limits<float>::infinity());
  for (int64_t s = 0; s < full; s += kLanes) {
    v8f x = eight_scores<C>(qv, keys + s * row_stride, row_stride);
    if (k_scale) x *= load(k_scale + s);
    store(&scores[s], x);
    top = x > top ? x : top;
  }
  float best = std::max({top[0], top[1], top[2], top[3], top[4], top[5], top[6], top[7]});
  for (int64_t s = full; s < n_keys; ++s) {  // the last n_keys % 8 keys one at a time
    const T* k = keys + s * row_stride;
    v8f acc = qv[0] * widen(k);
    for (int c = 1; c < C; ++c) acc += qv[c] * widen(k + c * kLanes);
    scores[s] = sum(acc) * (k_scale ? k_scale[s] : 1.0f);
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
    const T* v = values + s * row_stride;
    const v8f w = broadcast(v_scale ? scores[s] * v_scale[s] : scores[s]);
    for (int c = 0; c < C; ++c) acc[c] += w * widen(v + c * kLanes);
  }
  const float inverse = 1.0f / sum(total);
  for (int c = 0; c < C; ++c) store(out + c * kLanes, acc[c] * inverse);
}

template <typename T>
using Attend = void (*)(const float*, const T*, const T*, const float*, const float*, int64_t, int64_t, float, float*,
                        std::vector<float>&);

template <typename T>
Attend<T> attend_for(int64_t hs) {
  switch (hs) {  // head sizes compiled (native.HEAD_SIZES): both Bark models' 64, and the tests' tiny models'
    case 8: return attend_one<1, T>;
    case 16: return attend_one<2, T>;
    case 32: return attend_one<4, T>;
    case 64: return attend_one<8, T>;
    case 128: return attend_one<16, T>;
  }
  TORCH_CHECK(false, "head size must be one of 8, 16, 32, 64, 128");
}

void check_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::IntArrayRef first, int64_t stop,
                at::ScalarType cache_type) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "decode_attention runs on the CPU");
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kFloat && q.stride(3) == 1,
              "q must be (B, nh, 1, hs) fp32 with a contiguous last dim");
  TORCH_CHECK(k.scalar_type() == cache_type && v.scalar_type() == cache_type && k.is_contiguous() &&
                  v.is_contiguous() && k.sizes() == v.sizes() && k.dim() == 4,
              "k and v must be contiguous (B, nh, S, hs) caches of one shape and dtype");
  const int64_t B = q.size(0);
  TORCH_CHECK(k.size(0) == B && k.size(1) == q.size(1) && k.size(3) == q.size(3), "q and the cache disagree in shape");
  TORCH_CHECK(static_cast<int64_t>(first.size()) == B, "one first slot per row");
  TORCH_CHECK(0 < stop && stop <= k.size(2), "stop must lie in (0, cache length]");
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(0 <= first[b] && first[b] < stop, "first slots must lie before stop");
}

// Every (row, head) of q against its cache slots [first[b], stop), after `before(i, b, h)` (one thread's, like the
// attention itself) -> (B, 1, nh, hs) fp32 (heads side by side, as the output projection reads them).
template <typename T, typename Before>
at::Tensor attend_all(const at::Tensor& q, const T* kp, const T* vp, const float* k_scale, const float* v_scale,
                      int64_t S_max, at::IntArrayRef first, int64_t stop, Before before) {
  const int64_t B = q.size(0), nh = q.size(1), hs = q.size(3);
  const Attend<T> attend = attend_for<T>(hs);
  at::Tensor out = at::empty({B, 1, nh, hs}, q.options().memory_format(at::MemoryFormat::Contiguous));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t q_b = q.stride(0), q_h = q.stride(1);
  std::vector<int64_t> firsts(first.begin(), first.end());
  at::parallel_for(0, B * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nh, h = i % nh;
      before(i, b, h);
      const int64_t row = i * S_max + firsts[b];
      attend(qp + b * q_b + h * q_h, kp + row * hs, vp + row * hs, k_scale ? k_scale + row : nullptr,
             v_scale ? v_scale + row : nullptr, hs, stop - firsts[b], scale, op + (b * nh + h) * hs, scores);
    }
  });
  return out;
}

// q (B, nh, 1, hs) fp32, its last dim contiguous; k, v (B, nh, S_max, hs) bf16, contiguous; row b attends to the
// cache slots [first[b], stop) -> (B, 1, nh, hs) fp32.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::IntArrayRef first,
                            int64_t stop) {
  check_step(q, k, v, first, stop, at::kBFloat16);
  const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  return attend_all(q, kp, vp, nullptr, nullptr, k.size(2), first, stop, [](int64_t, int64_t, int64_t) {});
}

// x (hs,) fp32 -> q (hs,) int8 and its scale max|x| / 127: x = q * scale within half a step (as KVCache.write).
void quantize_row(const float* x, int64_t hs, int8_t* q, float* scale) {
  float peak = 0.0f;
  for (int64_t d = 0; d < hs; ++d) peak = std::max(peak, std::fabs(x[d]));
  const float s = std::max(peak, 1e-12f) / 127.0f;
  for (int64_t d = 0; d < hs; ++d) q[d] = static_cast<int8_t>(std::nearbyint(x[d] / s));
  *scale = s;
}

}  // namespace

namespace barkkit {

// The int8 cache (a scale per row, head and slot): k_new, v_new (B, nh, 1, hs) fp32 are quantized into `slot` first
// (by the thread that then reads them), then row b attends to the slots [first[b], slot] -> (B, 1, nh, hs) fp32.
at::Tensor decode_attention_int8(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                                 const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_scale,
                                 const at::Tensor& v_scale, at::IntArrayRef first, int64_t slot) {
  check_step(q, k, v, first, slot + 1, at::kChar);
  TORCH_CHECK(k_new.sizes() == q.sizes() && v_new.sizes() == q.sizes() && k_new.scalar_type() == at::kFloat &&
                  v_new.scalar_type() == at::kFloat && k_new.stride(3) == 1 && v_new.stride(3) == 1,
              "k_new and v_new must be (B, nh, 1, hs) fp32 like q");
  TORCH_CHECK(k_scale.scalar_type() == at::kFloat && v_scale.scalar_type() == at::kFloat && k_scale.is_contiguous() &&
                  v_scale.is_contiguous() && k_scale.sizes() == k.sizes().slice(0, 3) && v_scale.sizes() == k_scale.sizes(),
              "k_scale and v_scale must be contiguous (B, nh, S) fp32");
  int8_t* kp = k.data_ptr<int8_t>();
  int8_t* vp = v.data_ptr<int8_t>();
  float* ksp = k_scale.data_ptr<float>();
  float* vsp = v_scale.data_ptr<float>();
  const float* knp = k_new.data_ptr<float>();
  const float* vnp = v_new.data_ptr<float>();
  const int64_t S_max = k.size(2), hs = q.size(3);
  auto write = [&](int64_t i, int64_t b, int64_t h) {
    const int64_t at = i * S_max + slot;
    quantize_row(knp + b * k_new.stride(0) + h * k_new.stride(1), hs, kp + at * hs, ksp + at);
    quantize_row(vnp + b * v_new.stride(0) + h * v_new.stride(1), hs, vp + at * hs, vsp + at);
  };
  return attend_all<int8_t>(q, kp, vp, ksp, vsp, S_max, first, slot + 1, write);
}

}  // namespace barkkit

TORCH_LIBRARY(barkkit_native, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, int[] first, int stop) -> Tensor", &decode_attention);
  m.def("decode_attention_int8(Tensor q, Tensor k_new, Tensor v_new, Tensor(a!) k, Tensor(b!) v, Tensor(c!) k_scale, "
        "Tensor(d!) v_scale, int[] first, int slot) -> Tensor", &barkkit::decode_attention_int8);
}
