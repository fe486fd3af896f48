// tunebook::gemv_nf4 on CUDA for 1-16 rows of x: y = x @ W.T, W [N, K] in bitsandbytes' NF4
// layout, each packed weight byte read once (the rows of x share every decoded weight).
//
// One warp per output row; lane l takes the row's 16-byte chunks l, l+32, ... (32 weights each,
// one 16-byte load), decodes them to fp32 in registers once, and multiplies them into every row
// of x. Byte i of a chunk holds weights 2i (high nibble) and 2i+1 (low nibble), which is exactly
// the element pair in 32-bit word i of x, so x needs no reordering. The block scale is applied
// once per chunk to the chunk's partial dot product. Loads for kUnroll chunks are issued before
// any math so each lane keeps several 16-byte reads in flight (that, not the FLOPs, is what
// batch-1 GEMV needs). Other layouts (K % 32, odd blocksizes, unaligned pointers) take the
// scalar kernel.
#include <algorithm>
#include <type_traits>

#include "../common.cuh"

namespace tunebook_cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kUnroll = 4;

// 8 consecutive x values of row pointer p (16-byte aligned) as fp32.
template <typename T>
__device__ __forceinline__ void load_x8(const T* p, float (&v)[8]) {
  if constexpr (sizeof(T) == 4) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 a = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // bf16 -> fp32 is a shift
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
      } else {
        const float2 f = __half22float2(__halves2half2(__ushort_as_half(w[i] & 0xFFFFu),
                                                       __ushort_as_half(w[i] >> 16)));
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
      }
    }
  }
}

template <typename T, int M>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_vec(Weight w, const T* __restrict__ x, T* __restrict__ y, int64_t N, int64_t K) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = nf4_code(threadIdx.x);
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t chunks = K / 32;
  const uint8_t* row = w.packed + n * (K / 2);
  const int64_t e_row = n * K;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;

  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 q[kUnroll];
    float s[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < chunks) {
        q[u] = load_stream(row + c * 16);
        s[u] = block_scale(w, (e_row + c * 32) >> w.shift);
      } else {
        q[u] = make_uint4(0, 0, 0, 0);
        s[u] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c >= chunks) break;
      const uint32_t words[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
      float wv[32];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t byte = (words[j] >> (8 * i)) & 0xFF;
          wv[8 * j + 2 * i] = lut[byte >> 4];
          wv[8 * j + 2 * i + 1] = lut[byte & 15];
        }
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const T* xp = x + m * K + c * 32;
        float part0 = 0.0f, part1 = 0.0f;  // two chains: FMA latency, not throughput
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float xv[8];
          load_x8(xp + 8 * j, xv);
#pragma unroll
          for (int i = 0; i < 8; i += 2) {
            part0 = fmaf(wv[8 * j + i], xv[i], part0);
            part1 = fmaf(wv[8 * j + i + 1], xv[i + 1], part1);
          }
        }
        acc[m] = fmaf(part0 + part1, s[u], acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if (lane == 0) y[m * N + n] = from_float<T>(v);
  }
}

// Any layout: one warp per row, one weight per lane per step.
template <typename T>
__global__ void __launch_bounds__(kWarps * 32) gemv_scalar(Weight w, const T* __restrict__ x,
                                                            T* __restrict__ y, int64_t M,
                                                            int64_t N, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  float acc[TUNEBOOK_GEMV_MAX_ROWS] = {};
  for (int64_t k = lane; k < K; k += 32) {
    const int64_t e = n * K + k;
    const uint8_t byte = w.packed[e >> 1];
    const float wv = nf4_code((e & 1) ? (byte & 15) : (byte >> 4)) * block_scale(w, block_of(w, e));
    for (int64_t m = 0; m < M; ++m) acc[m] = fmaf(wv, to_float(x[m * K + k]), acc[m]);
  }
  for (int64_t m = 0; m < M; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if (lane == 0) y[m * N + n] = from_float<T>(v);
  }
}

template <typename T, int M>
void launch_vec(const Weight& w, const T* x, T* y, int64_t N, int64_t K, unsigned grid,
                cudaStream_t stream) {
  gemv_vec<T, M><<<grid, kWarps * 32, 0, stream>>>(w, x, y, N, K);
}

template <typename T>
cudaError_t launch(const Weight& w, const T* x, T* y, int64_t M, int64_t N, int64_t K,
                   cudaStream_t stream) {
  if (M < 1 || M > TUNEBOOK_GEMV_MAX_ROWS) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  // Chunks stay inside one block and one row, and every 16-byte load is aligned.
  const bool vec = K % 32 == 0 && w.shift >= 5 && aligned16(w.packed) && aligned16(x);
  if (!vec) {
    gemv_scalar<T><<<grid, kWarps * 32, 0, stream>>>(w, x, y, M, N, K);
    return cudaGetLastError();
  }
  switch (M) {
    case 1: launch_vec<T, 1>(w, x, y, N, K, grid, stream); break;
    case 2: launch_vec<T, 2>(w, x, y, N, K, grid, stream); break;
    case 3: launch_vec<T, 3>(w, x, y, N, K, grid, stream); break;
    case 4: launch_vec<T, 4>(w, x, y, N, K, grid, stream); break;
    case 5: launch_vec<T, 5>(w, x, y, N, K, grid, stream); break;
    case 6: launch_vec<T, 6>(w, x, y, N, K, grid, stream); break;
    case 7: launch_vec<T, 7>(w, x, y, N, K, grid, stream); break;
    case 8: launch_vec<T, 8>(w, x, y, N, K, grid, stream); break;
    case 9: launch_vec<T, 9>(w, x, y, N, K, grid, stream); break;
    case 10: launch_vec<T, 10>(w, x, y, N, K, grid, stream); break;
    case 11: launch_vec<T, 11>(w, x, y, N, K, grid, stream); break;
    case 12: launch_vec<T, 12>(w, x, y, N, K, grid, stream); break;
    case 13: launch_vec<T, 13>(w, x, y, N, K, grid, stream); break;
    case 14: launch_vec<T, 14>(w, x, y, N, K, grid, stream); break;
    case 15: launch_vec<T, 15>(w, x, y, N, K, grid, stream); break;
    default: launch_vec<T, 16>(w, x, y, N, K, grid, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace tunebook_cuda

extern "C" int tunebook_nf4_gemv_cuda(const TunebookNF4* w, const void* x, void* y, int64_t M,
                                      int64_t N, int64_t K, int dtype, void* stream) {
  using namespace tunebook_cuda;
  const Weight weight = make_weight(*w);
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TUNEBOOK_F32:
      return launch(weight, static_cast<const float*>(x), static_cast<float*>(y), M, N, K, s);
    case TUNEBOOK_BF16:
      return launch(weight, static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y),
                    M, N, K, s);
    case TUNEBOOK_F16:
      return launch(weight, static_cast<const __half*>(x), static_cast<__half*>(y), M, N, K, s);
    default:
      return cudaErrorInvalidValue;
  }
}
