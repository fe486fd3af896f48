// tunebook::dequantize_nf4 on CUDA: bitsandbytes NF4 (double-quantized absmax) -> bf16 / fp16 /
// fp32 in one launch, bitwise equal to bitsandbytes.functional.dequantize_4bit.
//
// Fast path: one thread per 16 packed bytes (32 weights, one 16-byte load), the block scale
// decoded in the same thread (code2[q] * absmax2 + offset), and the 32 outputs written with
// 16-byte stores. Needs a power-of-two blocksize that is a multiple of 32 (so 32 weights never
// straddle two blocks) and a 16-byte aligned packed pointer; anything else takes the scalar
// kernel, which is slow but handles every layout bitsandbytes can produce.
#include <algorithm>

#include "../common.cuh"

namespace tunebook_cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ void store32(T* out, const float (&v)[32]) {
  if constexpr (sizeof(T) == 4) {
    float4* o = reinterpret_cast<float4*>(out);
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
  } else {
    uint4* o = reinterpret_cast<uint4*>(out);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      o[j] = make_uint4(pack2<T>(v[8 * j], v[8 * j + 1]), pack2<T>(v[8 * j + 2], v[8 * j + 3]),
                        pack2<T>(v[8 * j + 4], v[8 * j + 5]), pack2<T>(v[8 * j + 6], v[8 * j + 7]));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dequant_vec(Weight w, T* __restrict__ out, int64_t full_chunks) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = nf4_code(threadIdx.x);
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t e0 = c * 32;
  if (c < full_chunks) {
    const uint4 q = load_stream(w.packed + c * 16);
    const float s = block_scale(w, e0 >> w.shift);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    float v[32];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t byte = (words[j] >> (8 * i)) & 0xFF;  // little-endian: byte 4j+i
        v[8 * j + 2 * i] = __fmul_rn(lut[byte >> 4], s);       // high nibble: even element
        v[8 * j + 2 * i + 1] = __fmul_rn(lut[byte & 15], s);  // low nibble: odd element
      }
    }
    store32(out + e0, v);
  } else if (c == full_chunks) {  // the last < 32 weights: byte loads, never past the end
    for (int64_t e = e0; e < w.numel; ++e) {
      const uint8_t byte = w.packed[e >> 1];
      const float s = block_scale(w, e >> w.shift);
      out[e] = from_float<T>(__fmul_rn(lut[(e & 1) ? (byte & 15) : (byte >> 4)], s));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dequant_scalar(Weight w, T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < w.numel;
       e += stride) {
    const uint8_t byte = w.packed[e >> 1];
    const float s = block_scale(w, block_of(w, e));
    out[e] = from_float<T>(__fmul_rn(nf4_code((e & 1) ? (byte & 15) : (byte >> 4)), s));
  }
}

template <typename T>
cudaError_t launch(const Weight& w, T* out, cudaStream_t stream) {
  if (w.numel == 0) return cudaSuccess;
  const bool vec = w.shift >= 5 && aligned16(w.packed) && aligned16(out);
  if (vec) {
    const int64_t full = w.numel / 32;
    const int64_t threads = full + (w.numel % 32 != 0);
    const int64_t blocks = (threads + kThreads - 1) / kThreads;
    dequant_vec<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(w, out, full);
  } else {
    const int64_t blocks = std::min<int64_t>((w.numel + kThreads - 1) / kThreads, 65535);
    dequant_scalar<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(w, out);
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace tunebook_cuda

extern "C" int tunebook_nf4_dequantize_cuda(const TunebookNF4* w, void* out, int dtype,
                                            void* stream) {
  using namespace tunebook_cuda;
  const Weight weight = make_weight(*w);
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TUNEBOOK_F32:
      return launch(weight, static_cast<float*>(out), s);
    case TUNEBOOK_BF16:
      return launch(weight, static_cast<__nv_bfloat16*>(out), s);
    case TUNEBOOK_F16:
      return launch(weight, static_cast<__half*>(out), s);
    default:
      return cudaErrorInvalidValue;
  }
}
