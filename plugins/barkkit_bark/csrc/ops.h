// Kernels of barkkit_bark.native that other kernels call directly (decode_block.cpp), not only through torch.ops.
#pragma once

#include <ATen/core/Tensor.h>

namespace barkkit {

// decode_attention.cpp: one query per row over an int8 cache, the step's own key and value written into `slot`.
at::Tensor decode_attention_int8(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                                 const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_scale,
                                 const at::Tensor& v_scale, at::IntArrayRef first, int64_t slot);

// gelu.cpp: GELU with the exact erf on the calling thread.
at::Tensor gelu(const at::Tensor& x);

}  // namespace barkkit
