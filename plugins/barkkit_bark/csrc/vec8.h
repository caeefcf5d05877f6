// 8-lane float vectors for barkkit_bark.native's kernels: GCC/Clang vector extensions, which the compiler lowers to
// AVX2 on x86-64 and to NEON on ARM.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace barkkit {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));

constexpr int kLanes = 8;

inline v8f load_bf16(const uint16_t* p) {
#ifdef __AVX2__  // one widening load and a shift (GCC splits its generic form into 128-bit halves)
  const __m256i wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
  return reinterpret_cast<v8f>(_mm256_castsi256_ps(wide));
#else
  v8h raw;
  std::memcpy(&raw, p, sizeof raw);
  v8u wide = __builtin_convertvector(raw, v8u) << 16;  // bf16 is the high half of an fp32
  v8f out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
#endif
}

inline v8f load_i8(const int8_t* p) {
#ifdef __AVX2__  // one widening load and a conversion
  return reinterpret_cast<v8f>(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#else
  typedef int8_t v8b __attribute__((vector_size(8)));
  v8b raw;
  std::memcpy(&raw, p, sizeof raw);
  return __builtin_convertvector(raw, v8f);
#endif
}

inline v8f broadcast(float x) { return v8f{x, x, x, x, x, x, x, x}; }

inline float sum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// exp(x) for x <= 0 (attention scores less their maximum; -x^2 in erf), within ~2 ulp: Cephes' expf on 8 lanes.
// Below -87.3 the result would be subnormal and is 0.
inline v8f exp_nonpositive(v8f x) {
  const v8i below = x < -87.3f;
  x = below ? broadcast(0.0f) : x;
  const v8f t = x * 1.44269504088896341f - 0.5f;  // round to nearest as truncation towards zero: x <= 0
  const v8i n = __builtin_convertvector(t, v8i);
  const v8f nf = __builtin_convertvector(n, v8f);
  const v8f r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  v8f p = broadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v8f y = p * r * r + r + 1.0f;
  const v8i bits = (n + 127) << 23;  // 2^n
  v8f scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return below ? broadcast(0.0f) : y * scale;
}

inline v8f load(const float* p) {
  v8f out;
  std::memcpy(&out, p, sizeof out);
  return out;
}

inline void store(float* p, v8f x) { std::memcpy(p, &x, sizeof x); }

// erf(x) within 1.5e-7 (Abramowitz & Stegun 7.1.26, as ATen's vectorised erf): 1 - t P(t) exp(-x^2), t = 1 / (1 +
// 0.3275911 |x|), with the sign of x.
inline v8f erf(v8f x) {
  v8i bits;
  std::memcpy(&bits, &x, sizeof bits);
  const v8i sign = bits & static_cast<int32_t>(0x80000000u);
  const v8i magnitude_bits = bits & 0x7fffffff;
  v8f a;
  std::memcpy(&a, &magnitude_bits, sizeof a);
  const v8f t = 1.0f / (1.0f + 0.3275911f * a);
  v8f p = broadcast(1.061405429f);
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const v8f y = 1.0f - p * t * exp_nonpositive(-(a * a));
  v8i y_bits;
  std::memcpy(&y_bits, &y, sizeof y_bits);
  y_bits |= sign;
  v8f out;
  std::memcpy(&out, &y_bits, sizeof out);
  return out;
}

}  // namespace barkkit
