// GELU with the exact erf, 0.5 x (1 + erf(x / sqrt 2)), for fast mode (barkkit_bark.native).
//
// A decode step applies GELU to one row of 3072 floats per layer. PyTorch's kernel splits even that over its thread
// pool and pays the pool's wake-up: 10-1400 us a call on 2 threads against ~4 here, on the calling thread. Fast mode
// calls this for a decode step's rows only (native.GELU_MAX_VALUES): for a prefill's or a fine pass's millions of
// values PyTorch's kernel over its pool is faster (1024 x 3072 capped at AVX2, 2 threads: 0.9-1.8 against 1.6-3 ms).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "ops.h"
#include "vec8.h"

namespace {

using namespace barkkit;

inline v8f gelu8(v8f x) { return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f)); }

}  // namespace

namespace barkkit {

// x fp32, contiguous -> GELU(x), within ~2e-7 of torch.nn.functional.gelu.
at::Tensor gelu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "gelu takes a contiguous fp32 tensor on the CPU");
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  float* y = out.data_ptr<float>();
  const int64_t n = x.numel();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, gelu8(load(in + i)));
  if (i < n) {  // the last few through a padded vector
    float tail[kLanes] = {0};
    std::memcpy(tail, in + i, (n - i) * sizeof(float));
    store(tail, gelu8(load(tail)));
    std::memcpy(y + i, tail, (n - i) * sizeof(float));
  }
  return out;
}

}  // namespace barkkit

TORCH_LIBRARY_FRAGMENT(barkkit_native, m) { m.def("gelu(Tensor x) -> Tensor", &barkkit::gelu); }
