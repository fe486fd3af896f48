// tunebook::gemv_nf4 for bf16 x on AVX512-BF16 CPUs, 1-16 rows, on the stored layout.
// Per 32 packed bytes (64 weights, one block at blocksize 64): one vpmovzxbw, one shift and two
// vpermw into a 32-word table of this block's 16 possible bf16 weights, then each row of x takes
// the 64 weights with two vdpbf16ps. x is permuted once per call so that each 64-element chunk
// reads (even elements, odd elements), matching the high and low nibbles: no weight shuffles.
// Weights are bf16-rounded (NF4[i] * scale, as bitsandbytes' own CPU GEMV has them); fp32 sums.
#include <ATen/Parallel.h>

#include "../common.h"

namespace tunebook {
namespace {

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INLINE __attribute__((always_inline)) inline

// Same grain as the other GEMV kernels (see gemv_nf4.cpp): SmolLM2 layers stay on one thread.
constexpr int64_t kGrainElems = int64_t{1} << 20;

// x [M, K] -> chunk-major [K / 64][M][64], each 64 elements as (32 even, 32 odd): a chunk's x
// for all rows is contiguous (rows K apart alias in L1 at K = 4096 and 16 rows).
BF16_TARGET void permute_x(const uint16_t* x, int64_t M, int64_t K, uint16_t* xp) {
  alignas(64) uint16_t ev[32], od[32];
  for (int j = 0; j < 32; ++j) {
    ev[j] = static_cast<uint16_t>(2 * j);
    od[j] = static_cast<uint16_t>(2 * j + 1);
  }
  const __m512i ie = _mm512_load_si512(ev), io = _mm512_load_si512(od);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < K / 64; ++c) {
      const uint16_t* src = x + m * K + c * 64;
      uint16_t* dst = xp + (c * M + m) * 64;
      const __m512i a = _mm512_loadu_si512(src), b = _mm512_loadu_si512(src + 32);
      _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(a, ie, b));
      _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(a, io, b));
    }
  }
}

// NF4[i] * s rounded to nearest-even bf16, twice over 32 words: vpermw reads index bit 4 too,
// so the low nibble (bits 4-7 still set) needs no mask.
BF16_TARGET INLINE __m512i bf16_table(__m512 lut, float s) {
  const __m512 v = _mm512_mul_ps(lut, _mm512_set1_ps(s));
  return (__m512i)_mm512_cvtne2ps_pbh(v, v);
}

// One chunk of R output rows (32 packed bytes each, rows K / 2 bytes apart) against 64 x
// elements of every row of x: each x load feeds R rows; acc[r][m][A0] / [A1] take the halves.
// POST: look up the unscaled codebook and apply the block scale to the chunk's dot product
// (one FMA per row of x instead of building a scaled table: cheaper for 1-2 rows).
template <int M, int R, int KA, int A0, int A1, bool POST>
BF16_TARGET INLINE void chunk(const uint8_t* p, int64_t row_bytes, const uint16_t* xc,
                              const float* sc, int64_t sc_stride, __m512 lut, __m512i table1,
                              __m512 (*acc)[M][KA]) {
  __m512bh whi[R], wlo[R];
  for (int r = 0; r < R; ++r) {
    const __m512i table = POST ? table1 : bf16_table(lut, sc[r * sc_stride]);
    const __m512i v = _mm512_cvtepu8_epi16(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + r * row_bytes)));
    whi[r] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), table);
    wlo[r] = (__m512bh)_mm512_permutexvar_epi16(v, table);
  }
  for (int m = 0; m < M; ++m) {
    const __m512bh xa = (__m512bh)_mm512_loadu_si512(xc + m * 64);
    const __m512bh xb = (__m512bh)_mm512_loadu_si512(xc + m * 64 + 32);
    for (int r = 0; r < R; ++r) {
      if constexpr (POST) {
        __m512 t = _mm512_dpbf16_ps(_mm512_setzero_ps(), whi[r], xa);
        t = _mm512_dpbf16_ps(t, wlo[r], xb);
        acc[r][m][A0] = _mm512_fmadd_ps(t, _mm512_set1_ps(sc[r * sc_stride]), acc[r][m][A0]);
      } else {
        acc[r][m][A0] = _mm512_dpbf16_ps(acc[r][m][A0], whi[r], xa);
        acc[r][m][A1] = _mm512_dpbf16_ps(acc[r][m][A1], wlo[r], xb);
      }
    }
  }
}

// R output rows from row; sc holds their per-chunk scales, nch apart; their dot products, not
// yet summed across lanes, go to fin[r * M + m]. Independent accumulators per (output row, row
// of x) so the dependency chains are not latency-bound, as many as 32 zmm registers allow.
template <int M, int R, bool POST>
BF16_TARGET INLINE void row_block(const uint8_t* row, const uint16_t* xp, int64_t K,
                                  const float* sc, __m512* fin) {
  constexpr int RM = R * M;
  // POST: one FMA chain per accumulator, two of them alternating chunks for 1-2 rows.
  constexpr int KA = POST ? (RM <= 2 ? 2 : 1) : (RM <= 2 ? 4 : (RM <= 8 ? 2 : 1));
  // Accumulators of even chunks (P0 = 0, P1) and odd chunks (Q0, Q1).
  constexpr int P1 = POST || KA == 1 ? 0 : 1;
  constexpr int Q0 = POST ? KA - 1 : (KA == 4 ? 2 : 0);
  constexpr int Q1 = POST ? KA - 1 : (KA == 4 ? 3 : P1);
  const __m512 lut = _mm512_load_ps(kNF4);
  const __m512i table1 = bf16_table(lut, 1.0f);
  const int64_t nch = K / 64, rb = K / 2;
  __m512 acc[R][M][KA];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) {
      for (int a = 0; a < KA; ++a) acc[r][m][a] = _mm512_setzero_ps();
    }
  }
  int64_t c = 0;
  for (; c + 2 <= nch; c += 2) {
    // The next R rows' line at this offset: several interleaved row streams otherwise
    // measured up to 1.7x slower (the hardware prefetcher follows one stream per page).
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(row + (R + r) * rb + c * 32), _MM_HINT_T0);
    }
    const uint16_t* xc = xp + c * M * 64;
    chunk<M, R, KA, 0, P1, POST>(row + c * 32, rb, xc, sc + c, nch, lut, table1, acc);
    chunk<M, R, KA, Q0, Q1, POST>(row + c * 32 + 32, rb, xc + M * 64, sc + c + 1, nch, lut,
                                  table1, acc);
  }
  if (c < nch) {
    chunk<M, R, KA, 0, P1, POST>(row + c * 32, rb, xp + c * M * 64, sc + c, nch, lut, table1,
                                 acc);
  }
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) {
      __m512 s = acc[r][m][0];
      for (int a = 1; a < KA; ++a) s = _mm512_add_ps(s, acc[r][m][a]);
      fin[r * M + m] = s;
    }
  }
}


// Lane sums of v[0], v[stride], ... v[15 * stride] as one vector (lane i: row i): four
// levels of two-register permutes, each halving the partial sums per row (45 ops for 16 rows
// instead of 16 serial reductions, which measured half the time on SmolLM2's 9-chunk rows).
BF16_TARGET INLINE __m512 reduce16(const __m512* v, int stride, const __m512i* idx) {
  __m512 t[16];
  for (int i = 0; i < 16; ++i) t[i] = v[i * stride];
  for (int lvl = 0, cnt = 8; lvl < 4; ++lvl, cnt /= 2) {
    for (int i = 0; i < cnt; ++i) {
      t[i] = _mm512_add_ps(_mm512_permutex2var_ps(t[2 * i], idx[2 * lvl], t[2 * i + 1]),
                           _mm512_permutex2var_ps(t[2 * i], idx[2 * lvl + 1], t[2 * i + 1]));
    }
  }
  return t[0];
}

// Output rows [n0, n1) in groups of kGroup: one row_scales call per group (blocks of
// consecutive rows are contiguous), R rows at a time, one reduce16 per row of x. With M2 > 0
// the rows of x come in two parts (x2 / out2: M2 more rows), each group running both while its
// weights are in cache: R = 2 output rows per x load with at most 8 x rows keeps the
// accumulators in registers.
constexpr int kGroup = 16;

template <int M, int R, bool POST, int M2 = 0>
BF16_TARGET void rows(const NF4Weight& w, const uint16_t* xp, const uint16_t* xp2, int64_t K,
                      int64_t N, int64_t n0, int64_t n1, float* out, float* out2) {
  const int64_t bpr = K / w.blocksize, cpb = w.blocksize / 64, nch = K / 64;
  std::vector<float> sc(kGroup * nch + 16);
  // Level L of reduce16 (P = 16 >> L partials per row in, P / 2 out): lane j takes row j / (P/2)
  // partial j % (P/2) from the lower or upper half of that row's partials.
  __m512i idx[8];
  for (int lvl = 0; lvl < 4; ++lvl) {
    alignas(64) int32_t lo[16], hi[16];
    const int half = 8 >> lvl;
    for (int j = 0; j < 16; ++j) {
      lo[j] = (j / half) * 2 * half + j % half;
      hi[j] = lo[j] + half;
    }
    idx[2 * lvl] = _mm512_load_si512(lo);
    idx[2 * lvl + 1] = _mm512_load_si512(hi);
  }
  alignas(64) __m512 fin[kGroup * (M + M2)];
  __m512* fin2 = fin + kGroup * M;
  for (int64_t g0 = n0; g0 < n1; g0 += kGroup) {
    const int64_t cnt = std::min<int64_t>(n1 - g0, kGroup);
    row_scales(w, g0 * bpr, cnt * bpr, sc.data());
    // One scale per chunk (blocksizes above 64 repeat it), so the loops never divide.
    for (int64_t c = cnt * nch - 1; cpb > 1 && c >= 0; --c) sc[c] = sc[c / cpb];
    int64_t i = 0;
    for (; i < cnt; i += (i + R <= cnt ? R : 1)) {
      const uint8_t* row = w.packed + (g0 + i) * (K / 2);
      const float* s = sc.data() + i * nch;
      if (i + R <= cnt) {
        row_block<M, R, POST>(row, xp, K, s, fin + i * M);
        if constexpr (M2 > 0) row_block<M2, R, POST>(row, xp2, K, s, fin2 + i * M2);
      } else {
        row_block<M, 1, POST>(row, xp, K, s, fin + i * M);
        if constexpr (M2 > 0) row_block<M2, 1, POST>(row, xp2, K, s, fin2 + i * M2);
      }
    }
    for (; i < kGroup; ++i) {  // a short group: zeros, so reduce16 reads defined lanes
      for (int m = 0; m < M; ++m) fin[i * M + m] = _mm512_setzero_ps();
      for (int m = 0; m < M2; ++m) fin2[i * M2 + m] = _mm512_setzero_ps();
    }
    const __mmask16 keep = static_cast<__mmask16>((1u << cnt) - 1);
    for (int m = 0; m < M; ++m) {
      _mm512_mask_storeu_ps(out + m * N + g0, keep, reduce16(fin + m, M, idx));
    }
    for (int m = 0; m < M2; ++m) {
      _mm512_mask_storeu_ps(out2 + m * N + g0, keep, reduce16(fin2 + m, M2, idx));
    }
  }
}

// Output rows per x load (R) by batch, measured on 14336x4096 and SmolLM2's lm_head: 1-2 rows
// take the unscaled table + FMA (POST) one output row at a time, 3-4 rows four output rows,
// 5-8 two; 9-16 rows of x run as two halves of at most 8 (run_split), two output rows each.
template <int M>
void run(const NF4Weight& w, const uint16_t* xp, int64_t K, int64_t N, float* out) {
  constexpr int R = M <= 2 ? 1 : (M <= 4 ? 4 : 2);
  at::parallel_for(0, N, std::max<int64_t>(1, kGrainElems / K), [&](int64_t n0, int64_t n1) {
    rows<M, R, (M <= 2)>(w, xp, nullptr, K, N, n0, n1, out, nullptr);
  });
}

// xp1 / xp2: the two halves of x, permuted separately.
template <int M1, int M2>
void run_split(const NF4Weight& w, const uint16_t* xp1, const uint16_t* xp2, int64_t K,
               int64_t N, float* out) {
  at::parallel_for(0, N, std::max<int64_t>(1, kGrainElems / K), [&](int64_t n0, int64_t n1) {
    rows<M1, 2, false, M2>(w, xp1, xp2, K, N, n0, n1, out, out + M1 * N);
  });
}

}  // namespace

bool gemv_bf16_supported(const NF4Weight& w, int64_t M, int64_t K) {
  static const bool hw = __builtin_cpu_supports("avx512bf16");
  return hw && use_avx512() && M >= 1 && M <= kMaxGemvBf16 && w.blocksize % 64 == 0 &&
         K % w.blocksize == 0 && std::getenv("TUNEBOOK_NF4_NO_BF16DOT") == nullptr;
}

at::Tensor gemv_bf16(const NF4Weight& w, const at::Tensor& x2, int64_t N) {
  const int64_t M = x2.size(0), K = x2.size(1);
  const auto* xs = static_cast<const uint16_t*>(x2.data_ptr());
  // Above 8 rows: two halves, each permuted on its own (M1 = ceil(M / 2) rows first).
  const int64_t M1 = M > 8 ? (M + 1) / 2 : M;
  std::vector<uint16_t> xp(M * K);
  permute_x(xs, M1, K, xp.data());
  if (M > M1) permute_x(xs + M1 * K, M - M1, K, xp.data() + M1 * K);
  at::Tensor out = at::empty({M, N}, x2.options());
  std::vector<float> buf(M * N);
  float* o = buf.data();
  const uint16_t* x = xp.data();
  const uint16_t* x1 = x + M1 * K;
  switch (M) {
    case 1: run<1>(w, x, K, N, o); break;
    case 2: run<2>(w, x, K, N, o); break;
    case 3: run<3>(w, x, K, N, o); break;
    case 4: run<4>(w, x, K, N, o); break;
    case 5: run<5>(w, x, K, N, o); break;
    case 6: run<6>(w, x, K, N, o); break;
    case 7: run<7>(w, x, K, N, o); break;
    case 8: run<8>(w, x, K, N, o); break;
    case 9: run_split<5, 4>(w, x, x1, K, N, o); break;
    case 10: run_split<5, 5>(w, x, x1, K, N, o); break;
    case 11: run_split<6, 5>(w, x, x1, K, N, o); break;
    case 12: run_split<6, 6>(w, x, x1, K, N, o); break;
    case 13: run_split<7, 6>(w, x, x1, K, N, o); break;
    case 14: run_split<7, 7>(w, x, x1, K, N, o); break;
    case 15: run_split<8, 7>(w, x, x1, K, N, o); break;
    default: run_split<8, 8>(w, x, x1, K, N, o); break;
  }
  auto* y = static_cast<uint16_t*>(out.data_ptr());
  for (int64_t i = 0; i < M * N; ++i) y[i] = f32_to_bf16(buf[i]);
  return out;
}

}  // namespace tunebook
