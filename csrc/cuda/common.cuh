// Device helpers shared by the CUDA NF4 kernels: codebook, absmax decode, dtype conversion.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../nf4_codebook.h"
#include "nf4_cuda.h"

namespace tunebook_cuda {

// bitsandbytes' NF4 codebook (functional.get_4bit_type("nf4")), fp32. Kernels copy it into
// shared memory once, where 32 lanes look up different entries without serializing.
static __constant__ float kNF4[16] = {TUNEBOOK_NF4_CODEBOOK};

__device__ __forceinline__ float nf4_code(int i) { return kNF4[i & 15]; }

// Kernel-argument form of TunebookNF4 (by value: lives in the constant bank).
struct Weight {
  const uint8_t* packed;
  const uint8_t* qabsmax;
  const float* absmax_f;
  const float* code2;
  const float* absmax2;
  float offset;
  int64_t blocksize;
  int64_t blocksize2;
  int shift;   // log2(blocksize) when a power of two, else -1
  int shift2;  // log2(blocksize2) when a power of two, else -1
  int64_t numel;
};

inline int log2_exact(int64_t v) {
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

inline Weight make_weight(const TunebookNF4& w) {
  return Weight{w.packed,    w.qabsmax,   w.absmax_f,  w.code2,
                w.absmax2,   w.offset,    w.blocksize, w.blocksize2,
                log2_exact(w.blocksize), log2_exact(w.blocksize2), w.numel};
}

// Block scale, rounded exactly as bitsandbytes does: code2[q] * absmax2 then + offset, two
// separately rounded fp32 operations (the _rn intrinsics are never contracted into an FMA).
__device__ __forceinline__ float block_scale(const Weight& w, int64_t b) {
  if (w.absmax_f != nullptr) return __ldg(w.absmax_f + b);
  const int64_t b2 = w.shift2 >= 0 ? (b >> w.shift2) : b / w.blocksize2;
  const float v = __fmul_rn(__ldg(w.code2 + __ldg(w.qabsmax + b)), __ldg(w.absmax2 + b2));
  return __fadd_rn(v, w.offset);
}

__device__ __forceinline__ int64_t block_of(const Weight& w, int64_t e) {
  return w.shift >= 0 ? (e >> w.shift) : e / w.blocksize;
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Two consecutive elements (lower address first) packed into 32 bits, round-to-nearest-even.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// 16-byte read-only load that bypasses L1 allocation: packed weights are read once.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace tunebook_cuda
