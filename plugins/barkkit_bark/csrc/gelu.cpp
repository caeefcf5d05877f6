// GELU with the exact erf, 0.5 x (1 + erf(x / sqrt 2)), for fast mode (barkkit_bark.native).
//
// A decode step applies GELU to one row of 3072 floats per layer. PyTorch's kernel splits even that over its thread
// pool and pays the pool's wake-up: 10-1400 us a call on 2 threads against ~4 here. Inputs below kGrain
// elements stay on the calling thread; larger ones (prefills, fine passes) are split over the pool as usual.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "vec8.h"

namespace {

using namespace barkkit;

constexpr int64_t kGrain = 1 << 15;

inline v8f gelu8(v8f x) { return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f)); }

// x fp32, contiguous -> GELU(x), within ~2e-7 of torch.nn.functional.gelu.
at::Tensor gelu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "gelu takes a contiguous fp32 tensor on the CPU");
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  float* y = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) store(y + i, gelu8(load(in + i)));
    if (i < end) {  // the last few through a padded vector
      float tail[kLanes] = {0};
      std::memcpy(tail, in + i, (end - i) * sizeof(float));
      store(tail, gelu8(load(tail)));
      std::memcpy(y + i, tail, (end - i) * sizeof(float));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(barkkit_native, m) { m.def("gelu(Tensor x) -> Tensor", &gelu); }
