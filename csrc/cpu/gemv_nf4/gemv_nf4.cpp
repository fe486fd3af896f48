// tunebook::gemv_nf4: y = x @ W.T with W [N, K] in bitsandbytes' NF4 layout.
// Batches of 1-8 rows run fused (codebook in a register, no full-size temporaries, threads
// over output rows; bf16 x on AVX512-BF16 CPUs: 1-16 rows in gemv_bf16.cpp); larger batches
// dequantize W a tile at a time into a cache-sized buffer and hand each tile to at::mm.
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../common.h"

namespace tunebook {
namespace {

constexpr int64_t kMaxFused = 8;
// Weight elements per thread at least (512 KiB packed): small layers (all of SmolLM2's) run on
// one thread. On a shared, oversubscribed machine a parallel region waits for a descheduled
// thread: measured 1.9 ms per SmolLM2 decode-step GEMV with two threads under load.
constexpr int64_t kGrainElems = int64_t{1} << 20;

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// One 16-byte chunk (32 weights) against M rows of x: lo/hi accumulate the two halves.
template <int M>
AVX512_TARGET __attribute__((always_inline)) inline void chunk_fma(const uint8_t* row,
                                                                    int64_t chunk, __m512 lut,
                                                                    __m512 vs, const float* xp,
                                                                    int64_t K, __m512* hi,
                                                                    __m512* lo) {
  const __m512i i =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + chunk * 16)));
  // vpermps reads only the low 4 index bits, so the low nibble needs no mask.
  const __m512 whi = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(i, 4), lut), vs);
  const __m512 wlo = _mm512_mul_ps(_mm512_permutexvar_ps(i, lut), vs);
  for (int m = 0; m < M; ++m) {
    const float* xm = xp + m * K + chunk * 32;
    hi[m] = _mm512_fmadd_ps(whi, _mm512_loadu_ps(xm), hi[m]);
    lo[m] = _mm512_fmadd_ps(wlo, _mm512_loadu_ps(xm + 16), lo[m]);
  }
}

// xp holds x in fp32 with every 32-element chunk reordered as (even elements, odd elements),
// matching the high / low nibbles of 16 packed bytes, so weights need no interleaving.
// Accumulators are indexed only by compile-time constants so they stay in registers.
template <int M>
AVX512_TARGET void rows_avx512(const NF4Weight& w, const float* xp, int64_t K, int64_t N,
                               int64_t n0, int64_t n1, float* out) {
  // Small batches alternate two accumulator pairs so the FMA chain is not latency-bound.
  constexpr bool kTwo = M <= 2;
  const __m512 lut = _mm512_load_ps(kNF4);
  const int64_t bpr = K / w.blocksize;
  const int64_t cpb = w.blocksize / 32;
  const uint8_t* packed = w.packed;
  std::vector<float> sc_buf(bpr + 16);
  float* sc = sc_buf.data();
  for (int64_t n = n0; n < n1; ++n) {
    __m512 a0[M], a1[M], a2[M], a3[M];
    for (int m = 0; m < M; ++m) {
      a0[m] = a1[m] = a2[m] = a3[m] = _mm512_setzero_ps();
    }
    const uint8_t* row = packed + n * (K / 2);
    row_scales(w, n * bpr, bpr, sc);
    int64_t chunk = 0;
    for (int64_t b = 0; b < bpr; ++b) {
      const __m512 vs = _mm512_set1_ps(sc[b]);
      int64_t c = 0;
      for (; c + 2 <= cpb; c += 2, chunk += 2) {
        chunk_fma<M>(row, chunk, lut, vs, xp, K, a0, a1);
        chunk_fma<M>(row, chunk + 1, lut, vs, xp, K, kTwo ? a2 : a0, kTwo ? a3 : a1);
      }
      if (c < cpb) chunk_fma<M>(row, chunk++, lut, vs, xp, K, a0, a1);
    }
    for (int m = 0; m < M; ++m) {
      __m512 s = _mm512_add_ps(a0[m], a1[m]);
      if constexpr (kTwo) s = _mm512_add_ps(s, _mm512_add_ps(a2[m], a3[m]));
      out[m * N + n] = _mm512_reduce_add_ps(s);
    }
  }
}

// Portable path (-mavx2 -mfma): dequantize one row to fp32 in L1, then dot it with each x row.
float dot_avx2(const float* a, const float* b, int64_t k) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(s0, s1));
  float s = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
  for (; i < k; ++i) s += a[i] * b[i];
  return s;
}

void rows_generic(const NF4Weight& w, const float* xf, int64_t M, int64_t K, int64_t N,
                  int64_t n0, int64_t n1, float* out) {
  std::vector<float> wrow(K);
  for (int64_t n = n0; n < n1; ++n) {
    dequantize_range(w, n * K, K, wrow.data(), at::kFloat, false);
    for (int64_t m = 0; m < M; ++m) out[m * N + n] = dot_avx2(xf + m * K, wrow.data(), K);
  }
}

template <int M>
void run_fused(const NF4Weight& w, const float* xp, int64_t K, int64_t N, float* out) {
  const int64_t grain = std::max<int64_t>(1, kGrainElems / K);
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    rows_avx512<M>(w, xp, K, N, n0, n1, out);
  });
}

// x rows -> fp32; with permute, each 32-element chunk as (even elements, odd elements).
// Plain loops, not ATen ops: at batch 1 on a small layer the op overhead is the cost.
template <typename T>
void x_to_f32(const T* x, int64_t M, int64_t K, bool permute, float* dst) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) {
      float v;
      if constexpr (std::is_same_v<T, uint16_t>) {
        v = bf16_to_f32(x[m * K + k]);
      } else {
        v = static_cast<float>(x[m * K + k]);
      }
      const int64_t r = k & 31;
      dst[m * K + (permute ? (k - r) + (r & 1) * 16 + (r >> 1) : k)] = v;
    }
  }
}

at::Tensor fused(const NF4Weight& w, const at::Tensor& x2, int64_t N) {
  const int64_t M = x2.size(0), K = x2.size(1);
  const at::ScalarType dt = x2.scalar_type();
  const bool fast = use_avx512() && w.blocksize % 32 == 0 && K % w.blocksize == 0;
  std::vector<float> xs(M * K);
  if (dt == at::kBFloat16) {
    x_to_f32(static_cast<const uint16_t*>(x2.data_ptr()), M, K, fast, xs.data());
  } else if (dt == at::kHalf) {
    x_to_f32(x2.data_ptr<c10::Half>(), M, K, fast, xs.data());
  } else {
    x_to_f32(x2.data_ptr<float>(), M, K, fast, xs.data());
  }
  at::Tensor out = at::empty({M, N}, x2.options());
  std::vector<float> buf(dt == at::kFloat ? 0 : M * N);
  float* o = dt == at::kFloat ? out.data_ptr<float>() : buf.data();
  if (!fast) {
    at::parallel_for(0, N, std::max<int64_t>(1, kGrainElems / K), [&](int64_t n0, int64_t n1) {
      rows_generic(w, xs.data(), M, K, N, n0, n1, o);
    });
  } else {
    switch (M) {
      case 1: run_fused<1>(w, xs.data(), K, N, o); break;
      case 2: run_fused<2>(w, xs.data(), K, N, o); break;
      case 3: run_fused<3>(w, xs.data(), K, N, o); break;
      case 4: run_fused<4>(w, xs.data(), K, N, o); break;
      case 5: run_fused<5>(w, xs.data(), K, N, o); break;
      case 6: run_fused<6>(w, xs.data(), K, N, o); break;
      case 7: run_fused<7>(w, xs.data(), K, N, o); break;
      default: run_fused<8>(w, xs.data(), K, N, o); break;
    }
  }
  if (dt == at::kBFloat16) {
    auto* y = static_cast<uint16_t*>(out.data_ptr());
    for (int64_t i = 0; i < M * N; ++i) y[i] = f32_to_bf16(buf[i]);
  } else if (dt == at::kHalf) {
    auto* y = out.data_ptr<c10::Half>();
    for (int64_t i = 0; i < M * N; ++i) y[i] = c10::Half(buf[i]);
  }
  return out;
}

at::Tensor tiled(const NF4Weight& w, const at::Tensor& x2, int64_t N) {
  const int64_t M = x2.size(0), K = x2.size(1);
  at::Tensor out = empty_output({M, N}, x2.options());
  const int64_t es = x2.element_size();
  // Tiles of at least 4 MiB (cache-resident between dequantize and mm) and at least as big as
  // x, since every mm call re-packs x: fewer, larger calls once x is large (capped at 64 MiB).
  const int64_t tile_bytes = std::clamp<int64_t>(M * K * es, int64_t{4} << 20, int64_t{64} << 20);
  int64_t tn = std::max<int64_t>(64, tile_bytes / std::max<int64_t>(1, K * es));
  tn = std::min(N, tn - tn % 16);
  at::Tensor tile = empty_output({tn, K}, x2.options());
  auto* base = static_cast<char*>(tile.data_ptr());
  for (int64_t n0 = 0; n0 < N; n0 += tn) {
    const int64_t rows = std::min(tn, N - n0);
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / K), [&](int64_t r0, int64_t r1) {
      dequantize_range(w, (n0 + r0) * K, (r1 - r0) * K, base + r0 * K * es, x2.scalar_type(),
                       false);
    });
    // A column slice of the row-major output is a valid strided GEMM destination.
    at::Tensor dst = out.narrow(1, n0, rows);
    at::mm_out(dst, x2, tile.narrow(0, 0, rows).t());
  }
  return out;
}

at::Tensor gemv_nf4_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& qabsmax,
                        const at::Tensor& code2, const at::Tensor& absmax2, double offset,
                        int64_t blocksize, int64_t blocksize2, at::IntArrayRef shape) {
  TORCH_CHECK(shape.size() == 2, "tunebook gemv_nf4: weight shape must be [N, K]");
  const int64_t N = shape[0], K = shape[1];
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == K, "tunebook gemv_nf4: x must end in K=", K);
  const at::ScalarType dt = x.scalar_type();
  TORCH_CHECK(dt == at::kBFloat16 || dt == at::kHalf || dt == at::kFloat,
              "tunebook gemv_nf4: x must be bf16, fp16 or fp32");
  const NF4Weight w =
      make_weight(packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, N * K);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  if (K == 0) return at::zeros(out_shape, x.options());
  const at::Tensor x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  if (M == 0 || N == 0) return at::zeros(out_shape, x.options());
  // bf16 on AVX512-BF16: the vdpbf16ps kernel (gemv_bf16.cpp) up to kMaxGemvBf16 rows
  // (TUNEBOOK_NF4_NO_BF16DOT=1 turns it off for comparison).
  const bool bf16_dot = dt == at::kBFloat16 && gemv_bf16_supported(w, M, K);
  const at::Tensor y = bf16_dot          ? gemv_bf16(w, x2, N)
                       : M <= kMaxFused ? fused(w, x2, N)
                                        : tiled(w, x2, N);
  return y.view(out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(tunebook, CPU, m) { m.impl("gemv_nf4", &gemv_nf4_cpu); }

}  // namespace tunebook
