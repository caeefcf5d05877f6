// fp32 attention of many queries (prefills, fine passes) for fast mode on CPUs without bf16 matrix units
// (barkkit_bark.native).
//
// PyTorch's CPU flash attention multiplies blocks of 128 queries by 512 keys through its GEMM and then runs the
// softmax over the block in memory; for a causal prompt it computes every block that touches the diagonal in full
// (~3/4 of the square for an 887-token coarse prefill, where 1/2 is needed). Here the matrix products are
// register-blocked for six queries at a time: the scores of 6 queries x 16 keys sit in twelve 8-lane accumulators
// while the head dimension is walked (keys packed dimension-major, so that a load brings eight keys), and the
// weighted values of 6 queries x 16 dimensions likewise. The online softmax runs on the 6 x 128 scores of a block
// while they are in L1, and a causal tile stops at its last query's key.
//
// Each (batch row, head) is one thread's from start to end, in an order that depends on its own inputs only.

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

constexpr int kRows = 6;     // queries a tile
constexpr int kBlock = 128;  // keys a block (a multiple of 16; 128 measured a little faster than 32 or 64)
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// Scores of the tile's 6 queries (Qs rows, scaled, hs = 8 C apart) against keys [16 g, 16 g + 16) of Kp, packed as
// (key group of 8, dimension, 8 keys) -> S rows (kBlock apart), columns [j, j + 16).
template <int C>
inline void scores_6x16(const float* qs, const float* kp, float* s, int j) {
  constexpr int hs = 8 * C;
  v8f acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = broadcast(0.0f);
  const float* k0 = kp;
  const float* k1 = kp + hs * kLanes;
  for (int d = 0; d < hs; ++d) {
    const v8f a = load(k0 + d * kLanes), b = load(k1 + d * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const v8f q = broadcast(qs[r * hs + d]);
      acc[r][0] += q * a;
      acc[r][1] += q * b;
    }
  }
  for (int r = 0; r < kRows; ++r) {
    store(s + r * kBlock + j, acc[r][0]);
    store(s + r * kBlock + j + kLanes, acc[r][1]);
  }
}

// O rows (hs apart) += P rows (kBlock apart) x V rows [0, n) (`v_stride` apart), dimensions [d0, d0 + 8 NV).
template <int NV>
inline void weighted_values(const float* p, const float* v, int64_t v_stride, int n, float* o, int hs, int d0) {
  v8f acc[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = load(o + r * hs + d0 + c * kLanes);
  for (int j = 0; j < n; ++j) {
    v8f vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = load(v + j * v_stride + d0 + c * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const v8f w = broadcast(p[r * kBlock + j]);
      for (int c = 0; c < NV; ++c) acc[r][c] += w * vv[c];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) store(o + r * hs + d0 + c * kLanes, acc[r][c]);
}

struct Head {
  const float* q;  // (Tq, hs) rows q_stride apart
  const float* k;  // (Tk, hs) rows k_stride apart
  const float* v;  // (Tk, hs) rows v_stride apart
  float* out;      // (Tq, hs) rows out_stride apart
  int64_t q_stride, k_stride, v_stride, out_stride, Tq, Tk;
};

// One (batch row, head). kp, qs: this thread's scratch. Query i sees keys [0, i + 1) if causal, else every key.
template <int C>
void attend_head(const Head& h, bool causal, std::vector<float>& kp, std::vector<float>& qs, std::vector<float>& vp) {
  constexpr int hs = 8 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t keys_padded = (h.Tk + kBlock - 1) / kBlock * kBlock;
  const int64_t rows_padded = (h.Tq + kRows - 1) / kRows * kRows;
  kp.assign(keys_padded * hs, 0.0f);  // (key group of 8, hs, 8): padding keys are zero (and masked)
  for (int64_t t = 0; t < h.Tk; ++t)
    for (int d = 0; d < hs; ++d) kp[(t / kLanes * hs + d) * kLanes + t % kLanes] = h.k[t * h.k_stride + d];
  vp.resize(h.Tk * hs);  // values contiguous: the model's rows are 3 C apart, a page each
  for (int64_t t = 0; t < h.Tk; ++t) std::copy(h.v + t * h.v_stride, h.v + t * h.v_stride + hs, &vp[t * hs]);
  qs.assign(rows_padded * hs, 0.0f);  // scaled queries, padding rows zero (computed, never written out)
  for (int64_t t = 0; t < h.Tq; ++t)
    for (int d = 0; d < hs; ++d) qs[t * hs + d] = h.q[t * h.q_stride + d] * scale;

  alignas(64) float s[kRows * kBlock];
  alignas(64) float o[kRows * hs];
  float top[kRows], total[kRows];
  for (int64_t i0 = 0; i0 < rows_padded; i0 += kRows) {
    std::fill(o, o + kRows * hs, 0.0f);
    std::fill(top, top + kRows, kMinusInf);
    std::fill(total, total + kRows, 0.0f);
    const int64_t key_end = causal ? std::min(h.Tk, i0 + kRows) : h.Tk;  // keys this tile sees
    for (int64_t j0 = 0; j0 < key_end; j0 += kBlock) {
      const int n = static_cast<int>(std::min<int64_t>(kBlock, key_end - j0));  // real keys in this block
      const int groups = (n + 15) / 16;
      for (int g = 0; g < groups; ++g) scores_6x16<C>(&qs[i0 * hs], &kp[(j0 + 16 * g) * hs], s, 16 * g);
      for (int r = 0; r < kRows; ++r) {  // online softmax of row r over this block
        float* row = s + r * kBlock;
        const int seen = causal ? static_cast<int>(std::clamp<int64_t>(i0 + r + 1 - j0, 0, n)) : n;
        for (int j = seen; j < 16 * groups; ++j) row[j] = kMinusInf;
        v8f m = broadcast(kMinusInf);
        for (int j = 0; j < 16 * groups; j += kLanes) {
          const v8f x = load(row + j);
          m = x > m ? x : m;
        }
        const float best = std::max({top[r], m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]});
        if (best == kMinusInf) {  // nothing seen yet (never in a first block: key 0 is everyone's)
          std::fill(row, row + 16 * groups, 0.0f);
          continue;
        }
        v8f sum8 = broadcast(0.0f);
        for (int j = 0; j < 16 * groups; j += kLanes) {
          const v8f w = exp_nonpositive(load(row + j) - best);
          store(row + j, w);
          sum8 += w;
        }
        const float correction = top[r] == kMinusInf ? 0.0f : std::exp(top[r] - best);
        total[r] = total[r] * correction + sum(sum8);
        top[r] = best;
        if (correction != 1.0f)
          for (int d = 0; d < hs; ++d) o[r * hs + d] *= correction;
      }
      const float* vb = &vp[j0 * hs];
      for (int d0 = 0; d0 < hs; d0 += (C % 2 ? 8 : 16)) {
        if (C % 2) weighted_values<1>(s, vb, hs, n, o, hs, d0);
        else weighted_values<2>(s, vb, hs, n, o, hs, d0);
      }
    }
    for (int r = 0; r < kRows && i0 + r < h.Tq; ++r) {
      const float inverse = 1.0f / total[r];
      for (int d = 0; d < hs; ++d) h.out[(i0 + r) * h.out_stride + d] = o[r * hs + d] * inverse;
    }
  }
}

// q (B, nh, Tq, hs), k and v (B, nh, Tk, hs), fp32, each with a contiguous last dim -> (B, Tq, nh, hs) fp32 (heads
// side by side, as the output projection reads them). causal: query i sees keys [0, i] (Tq == Tk).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "attention runs on the CPU");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k and v must be (B, nh, T, hs)");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "q, k and v must be fp32");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "q, k and v need a contiguous last dim");
  const int64_t B = q.size(0), nh = q.size(1), Tq = q.size(2), hs = q.size(3), Tk = k.size(2);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(1) == nh && k.size(3) == hs,
              "q, k and v disagree in shape");
  TORCH_CHECK(!causal || Tq == Tk, "causal attention needs as many queries as keys");
  TORCH_CHECK(Tk > 0, "attention needs at least one key");
  using Attend = void (*)(const Head&, bool, std::vector<float>&, std::vector<float>&, std::vector<float>&);
  Attend attend = nullptr;
  switch (hs) {  // head sizes compiled (native.HEAD_SIZES)
    case 8: attend = attend_head<1>; break;
    case 16: attend = attend_head<2>; break;
    case 32: attend = attend_head<4>; break;
    case 64: attend = attend_head<8>; break;
    case 128: attend = attend_head<16>; break;
  }
  TORCH_CHECK(attend != nullptr, "head size must be one of 8, 16, 32, 64, 128");
  at::Tensor out = at::empty({B, Tq, nh, hs}, q.options().memory_format(at::MemoryFormat::Contiguous));
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> packed_keys, scaled_queries, values;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nh, hd = i % nh;
      const Head head{qp + b * q.stride(0) + hd * q.stride(1), kp + b * k.stride(0) + hd * k.stride(1),
                      vp + b * v.stride(0) + hd * v.stride(1), op + (b * Tq * nh + hd) * hs,
                      q.stride(2), k.stride(2), v.stride(2), nh * hs, Tq, Tk};
      attend(head, causal, packed_keys, scaled_queries, values);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(barkkit_native, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v, bool causal) -> Tensor", &attention);
}
