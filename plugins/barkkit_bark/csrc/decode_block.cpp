// One transformer block of a decode step through int8 linears in one call (barkkit_bark.native), fast mode's and
// exact mode's drafting twin's: layer norm, the int8 q/k/v projection, attention over the KV cache, the output
// projection, the MLP, both residuals.
//
// A decode step's arithmetic is a weight read per linear; around it, Python spent ~40 operator calls a block (each
// linear's per-row activation scale, views, layer norms, residuals) and the modules' own code: 1.4-2 ms of a 5-8 ms
// coarse step capped at AVX2. Here the same operators run from C++, in the same order on the same values, so the
// result is bit for bit what model.Block.extend computes (tested): the linears call fbgemm's packed weights through
// PyTorch's own LinearPackedParamsBase, exactly as kernels.Int8Linear does.

#include <ATen/ATen.h>
#include <ATen/native/quantized/PackedParams.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "ops.h"

namespace {

using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

// Rows of x (M, K) -> (M, N) through int8 weights, each row divided by its largest magnitude and quantized with one
// fixed scale to `levels` (127: 8 bits, 63: 7), the output multiplied back, then the bias: kernels.Int8Linear's
// fbgemm decode path.
at::Tensor int8_rows(const at::Tensor& x, const Packed& weight, const std::optional<at::Tensor>& bias, int64_t levels) {
  const at::Tensor peak = x.abs().amax(1, true).clamp_min_(1e-12);  // (M, 1)
  at::Tensor y = weight->apply_with_input_q_dq_qweight_dq_output_fp32(x / peak, 1.0 / static_cast<double>(levels),
                                                                       levels + 1);
  y.mul_(peak);
  if (bias.has_value()) y += *bias;
  return y;
}

// The step's attention: q, k_new, v_new (B, nh, 1, hs) -> (B, 1, nh, hs). An int8 cache through the native kernel
// (which writes the slot); an fp32 cache (exact mode's drafting twin) written here and read by PyTorch's attention,
// as SelfAttention.extend does: one call for all rows, or with `first` one call a row from its first slot.
at::Tensor attend(const std::vector<at::Tensor>& qkv, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& k_scale, const std::optional<at::Tensor>& v_scale,
                  at::IntArrayRef first, int64_t slot) {
  const at::Tensor &q = qkv[0], &k_new = qkv[1], &v_new = qkv[2];
  if (k.scalar_type() == at::kChar) {
    TORCH_CHECK(k_scale.has_value() && v_scale.has_value(), "an int8 cache needs its scales");
    const std::vector<int64_t> zeros(q.size(0), 0);
    return barkkit::decode_attention_int8(q, k_new, v_new, k, v, *k_scale, *v_scale,
                                          first.empty() ? at::IntArrayRef(zeros) : first, slot);
  }
  TORCH_CHECK(k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat, "the cache must be int8 or fp32");
  k.slice(2, slot, slot + 1).copy_(k_new);
  v.slice(2, slot, slot + 1).copy_(v_new);
  const at::Tensor keys = k.slice(2, 0, slot + 1), values = v.slice(2, 0, slot + 1);
  if (first.empty()) return at::scaled_dot_product_attention(q, keys, values).transpose(1, 2);
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < q.size(0); ++b)
    rows.push_back(at::scaled_dot_product_attention(q.slice(0, b, b + 1), keys.slice(0, b, b + 1).slice(2, first[b]),
                                                    values.slice(0, b, b + 1).slice(2, first[b])));
  return at::cat(rows).transpose(1, 2);
}

at::Tensor norm(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return at::layer_norm(x, {x.size(-1)}, weight, bias, 1e-5);
}

// x (B, C) fp32, one new position per row at cache slot `slot` (row b attends to slots [first[b], slot]; `first`
// empty: every row from slot 0) -> (B, C). k, v (B, nh, S, hs) the block's cache, int8 with k_scale, v_scale
// (B, nh, S), or fp32; the step's key and value are written into it. gelu_max: the most values the MLP's GELU
// runs natively (native.GELU_MAX_VALUES; more go to PyTorch's).
at::Tensor decode_block(const at::Tensor& x, const at::Tensor& ln_1, const std::optional<at::Tensor>& ln_1_bias,
                        const Packed& c_attn, const std::optional<at::Tensor>& c_attn_bias, const Packed& attn_proj,
                        const std::optional<at::Tensor>& attn_proj_bias, const at::Tensor& ln_2,
                        const std::optional<at::Tensor>& ln_2_bias, const Packed& c_fc,
                        const std::optional<at::Tensor>& c_fc_bias, const Packed& mlp_proj,
                        const std::optional<at::Tensor>& mlp_proj_bias, const at::Tensor& k, const at::Tensor& v,
                        const std::optional<at::Tensor>& k_scale, const std::optional<at::Tensor>& v_scale,
                        at::IntArrayRef first, int64_t slot, int64_t levels, int64_t gelu_max) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.device().is_cpu(), "x must be (B, C) fp32 on the CPU");
  TORCH_CHECK(k.dim() == 4, "the cache must be (B, nh, S, hs)");
  const int64_t B = x.size(0), C = x.size(1), nh = k.size(1), hs = k.size(3);
  TORCH_CHECK(nh * hs == C, "the cache's heads do not make up the model's width");
  const at::Tensor qkv = int8_rows(norm(x, ln_1, ln_1_bias), c_attn, c_attn_bias, levels);  // (B, 3C)
  const auto parts = qkv.view({B, 1, 3, nh, hs}).permute({2, 0, 3, 1, 4}).unbind(0);  // each (B, nh, 1, hs)
  const at::Tensor heads = attend(parts, k, v, k_scale, v_scale, first, slot);  // (B, 1, nh, hs)
  const at::Tensor h = x + int8_rows(heads.reshape({B, C}), attn_proj, attn_proj_bias, levels);
  const at::Tensor up = int8_rows(norm(h, ln_2, ln_2_bias), c_fc, c_fc_bias, levels);  // (B, 4C)
  const at::Tensor act = up.numel() <= gelu_max ? barkkit::gelu(up) : at::gelu(up);
  return h + int8_rows(act, mlp_proj, mlp_proj_bias, levels);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(barkkit_native, m) {
  m.def(
      "decode_block(Tensor x, Tensor ln_1, Tensor? ln_1_bias, "
      "__torch__.torch.classes.quantized.LinearPackedParamsBase c_attn, Tensor? c_attn_bias, "
      "__torch__.torch.classes.quantized.LinearPackedParamsBase attn_proj, Tensor? attn_proj_bias, "
      "Tensor ln_2, Tensor? ln_2_bias, "
      "__torch__.torch.classes.quantized.LinearPackedParamsBase c_fc, Tensor? c_fc_bias, "
      "__torch__.torch.classes.quantized.LinearPackedParamsBase mlp_proj, Tensor? mlp_proj_bias, "
      "Tensor(a!) k, Tensor(b!) v, Tensor(c!)? k_scale, Tensor(d!)? v_scale, int[] first, int slot, int levels, "
      "int gelu_max) -> Tensor",
      &decode_block);
}
