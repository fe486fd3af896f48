// Shared pieces of the CPU NF4 kernels: bitsandbytes' layout, absmax decoding, ISA dispatch.
//
// Layout (bitsandbytes quantize_4bit, quant_type="nf4"): the weight is flattened row-major;
// byte i holds element 2i in its high nibble and element 2i+1 in its low nibble; element e
// belongs to block e / blocksize. With double quantization the block scale is
//   absmax[b] = code2[qabsmax[b]] * absmax2[b / blocksize2] + offset
// computed as two separately rounded fp32 operations (bitsandbytes dequantizes absmax into a
// tensor, then adds the offset), so nothing here may fuse them into an FMA: the extension is
// built with -ffp-contract=off and the vector code issues explicit FMAs only where results
// need not be bitwise equal to bitsandbytes (the GEMV).
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../nf4_codebook.h"

namespace tunebook {

// bitsandbytes' NF4 codebook (functional.get_4bit_type("nf4")), fp32.
alignas(64) static constexpr float kNF4[16] = {TUNEBOOK_NF4_CODEBOOK};

// Raw pointers to one quantized weight; plain (non-nested) absmax sets absmax_f instead.
struct NF4Weight {
  const uint8_t* packed = nullptr;
  const uint8_t* qabsmax = nullptr;
  const float* absmax_f = nullptr;
  const float* code2 = nullptr;
  const float* absmax2 = nullptr;
  float offset = 0.0f;
  int64_t blocksize = 64;
  int64_t blocksize2 = 256;
  int shift2 = 8;  // log2(blocksize2) when a power of two, else -1 (idiv per block is slow)
  int64_t numel = 0;
};

inline float block_absmax(const NF4Weight& w, int64_t b) {
  if (w.absmax_f != nullptr) return w.absmax_f[b];
  const int64_t b2 = w.shift2 >= 0 ? (b >> w.shift2) : b / w.blocksize2;
  const float v = w.code2[w.qabsmax[b]] * w.absmax2[b2];
  return v + w.offset;
}

// Round-to-nearest-even fp32 -> bf16, the same as torch's .to(bfloat16) and bitsandbytes'
// float_to_bf16 (NaN is never produced by a finite codebook times a finite scale).
inline uint16_t f32_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// AVX-512 F/BW/VL/DQ is what the fast paths use; TUNEBOOK_NF4_ISA=avx2 forces the portable
// path (built with -mavx2 -mfma) so tests cover both on an AVX-512 machine.
inline bool use_avx512() {
  static const bool hw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const char* isa = std::getenv("TUNEBOOK_NF4_ISA");
  if (isa != nullptr && std::strcmp(isa, "avx2") == 0) return false;
  return hw;
}

#define TUNEBOOK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// code2[q] for 16 indices: eight two-register permutes and a blend tree on index bits 5-7.
// A gather measured slower: its latency sits right before the GEMV row loop that needs it.
TUNEBOOK_AVX512 inline __m512 code2_lookup(const float* code2, __m512i q) {
  __m512 r[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_permutex2var_ps(_mm512_loadu_ps(code2 + 32 * i), q,
                                  _mm512_loadu_ps(code2 + 32 * i + 16));
  }
  const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
  const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
  const __mmask16 b7 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(128));
  for (int i = 0; i < 4; ++i) r[i] = _mm512_mask_blend_ps(b5, r[2 * i], r[2 * i + 1]);
  for (int i = 0; i < 2; ++i) r[i] = _mm512_mask_blend_ps(b6, r[2 * i], r[2 * i + 1]);
  return _mm512_mask_blend_ps(b7, r[0], r[1]);
}

// Scales of blocks [b0, b0 + n) into sc, 16 at a time for nested absmax with a power-of-two
// blocksize2 >= 16 (the same two fp32 roundings as block_absmax): kernels then only load them.
TUNEBOOK_AVX512 inline void row_scales(const NF4Weight& w, int64_t b0, int64_t n, float* sc) {
  int64_t j = 0;
  if (w.absmax_f == nullptr && w.shift2 >= 0) {
    for (; j + 16 <= n && w.shift2 >= 4; j += 16) {
      const int64_t b = b0 + j, e0 = b >> w.shift2, e1 = (b + 15) >> w.shift2;
      // 16 blocks straddle at most one absmax2 entry: lanes from the boundary on take the next.
      const __mmask16 next =
          e0 == e1 ? 0 : static_cast<__mmask16>(0xFFFFu << ((e1 << w.shift2) - b));
      const __m512 a2 = _mm512_mask_blend_ps(next, _mm512_set1_ps(w.absmax2[e0]),
                                             _mm512_set1_ps(w.absmax2[e1]));
      const __m512i q =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qabsmax + b)));
      const __m512 v = _mm512_mul_ps(code2_lookup(w.code2, q), a2);
      _mm512_storeu_ps(sc + j, _mm512_add_ps(v, _mm512_set1_ps(w.offset)));
    }
  }
  for (; j < n; ++j) sc[j] = block_absmax(w, b0 + j);
}

// Outputs of at least 32 MiB come from alloc.cpp: transparent-huge-page backed and recycled
// (bounded; TUNEBOOK_NF4_CACHE_MB, default 1024, 0 = off), because first-touch page faults,
// not the kernels, bound a large dequantize on a fresh allocation.
at::Tensor empty_output(at::IntArrayRef shape, const at::TensorOptions& opts);

// Builds an NF4Weight from the op arguments, checking what the kernels rely on.
NF4Weight make_weight(const at::Tensor& packed, const at::Tensor& qabsmax, const at::Tensor& code2,
                      const at::Tensor& absmax2, double offset, int64_t blocksize,
                      int64_t blocksize2, int64_t numel);

// Dequantizes flat elements [start, start + count) into out (dtype bf16, fp16 or fp32).
void dequantize_range(const NF4Weight& w, int64_t start, int64_t count, void* out,
                      at::ScalarType dtype, bool stream);

// bf16 x on AVX512-BF16 CPUs (gemv_nf4/gemv_bf16.cpp): the fused vdpbf16ps GEMV for
// 1..kMaxGemvBf16 rows, where the CPU, blocksize (a multiple of 64) and K (whole blocks) allow.
constexpr int64_t kMaxGemvBf16 = 16;
bool gemv_bf16_supported(const NF4Weight& w, int64_t M, int64_t K);
at::Tensor gemv_bf16(const NF4Weight& w, const at::Tensor& x2, int64_t N);

}  // namespace tunebook
