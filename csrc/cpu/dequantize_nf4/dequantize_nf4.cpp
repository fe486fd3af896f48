// tunebook::dequantize_nf4: bitsandbytes NF4 (double-quantized absmax) -> bf16 / fp16 / fp32,
// bitwise equal to bitsandbytes.functional.dequantize_4bit on the same quantized weight.
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../common.h"

namespace tunebook {

NF4Weight make_weight(const at::Tensor& packed, const at::Tensor& qabsmax, const at::Tensor& code2,
                      const at::Tensor& absmax2, double offset, int64_t blocksize,
                      int64_t blocksize2, int64_t numel) {
  TORCH_CHECK(packed.device().is_cpu(), "tunebook nf4: packed weight must be on CPU");
  TORCH_CHECK(packed.is_contiguous(), "tunebook nf4: packed weight must be contiguous");
  TORCH_CHECK(packed.element_size() * packed.numel() >= (numel + 1) / 2,
              "tunebook nf4: packed weight holds fewer than numel/2 bytes");
  TORCH_CHECK(blocksize > 0 && blocksize % 2 == 0, "tunebook nf4: blocksize must be even");
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  NF4Weight w;
  w.packed = static_cast<const uint8_t*>(packed.data_ptr());
  w.blocksize = blocksize;
  w.numel = numel;
  if (qabsmax.scalar_type() == at::kFloat) {  // compress_statistics=False: absmax as is
    TORCH_CHECK(qabsmax.is_contiguous() && qabsmax.numel() >= blocks, "tunebook nf4: absmax");
    w.absmax_f = qabsmax.data_ptr<float>();
    return w;
  }
  TORCH_CHECK(qabsmax.scalar_type() == at::kByte && qabsmax.is_contiguous() &&
                  qabsmax.numel() >= blocks,
              "tunebook nf4: qabsmax must be uint8 with one entry per block");
  TORCH_CHECK(code2.scalar_type() == at::kFloat && code2.numel() == 256 && code2.is_contiguous(),
              "tunebook nf4: code2 must be bitsandbytes' 256-entry fp32 dynamic map");
  TORCH_CHECK(blocksize2 > 0, "tunebook nf4: blocksize2 must be positive");
  TORCH_CHECK(absmax2.scalar_type() == at::kFloat && absmax2.is_contiguous() &&
                  absmax2.numel() >= (blocks + blocksize2 - 1) / blocksize2,
              "tunebook nf4: absmax2 must be fp32 with one entry per 8-bit block");
  w.qabsmax = qabsmax.data_ptr<uint8_t>();
  w.code2 = code2.data_ptr<float>();
  w.absmax2 = absmax2.data_ptr<float>();
  w.offset = static_cast<float>(offset);  // bitsandbytes keeps it as a 0-dim fp32 tensor
  w.blocksize2 = blocksize2;
  w.shift2 = (blocksize2 & (blocksize2 - 1)) == 0 ? __builtin_ctzll(blocksize2) : -1;
  return w;
}

namespace {

inline uint8_t nibble(const uint8_t* packed, int64_t e) {
  const uint8_t b = packed[e >> 1];
  return (e & 1) ? (b & 0x0F) : (b >> 4);  // high nibble first
}

template <typename T>
inline void store_scalar(T* out, int64_t i, float v) {
  if constexpr (std::is_same_v<T, float>) {
    out[i] = v;
  } else if constexpr (std::is_same_v<T, uint16_t>) {
    out[i] = f32_to_bf16(v);
  } else {
    out[i] = c10::Half(v);
  }
}

// Portable path (the baseline -mavx2 -mfma -mf16c). Same per-block table as the AVX-512 path:
// the 16 outputs NF4[i] * s rounded once; for 16-bit outputs its low and high bytes become two
// 16-byte vpshufb tables (a nibble is exactly vpshufb's index range).
template <typename T>
inline void block_table_avx2(float s, __m256i& t0, __m256i& t1) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256 v0 = _mm256_mul_ps(_mm256_load_ps(kNF4), vs);
  const __m256 v1 = _mm256_mul_ps(_mm256_load_ps(kNF4 + 8), vs);
  if constexpr (std::is_same_v<T, float>) {
    t0 = _mm256_castps_si256(v0);
    t1 = _mm256_castps_si256(v1);
    return;
  }
  __m256i words;  // the 16 rounded outputs in order
  if constexpr (std::is_same_v<T, uint16_t>) {
    const auto round = [](__m256 v) {
      const __m256i a = _mm256_castps_si256(v);
      const __m256i r = _mm256_add_epi32(
          _mm256_set1_epi32(0x7FFF), _mm256_and_si256(_mm256_srli_epi32(a, 16), _mm256_set1_epi32(1)));
      return _mm256_srli_epi32(_mm256_add_epi32(a, r), 16);
    };
    words = _mm256_permute4x64_epi64(_mm256_packus_epi32(round(v0), round(v1)), 0xD8);
  } else {
    constexpr int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    words = _mm256_set_m128i(_mm256_cvtps_ph(v1, rnd), _mm256_cvtps_ph(v0, rnd));
  }
  // Per lane: low bytes of its 8 words, then their high bytes; then gather both lanes' halves.
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0,
                                         2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m256i bytes = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(words, split), 0xD8);
  t0 = _mm256_permute2x128_si256(bytes, bytes, 0x00);  // low bytes, in both lanes
  t1 = _mm256_permute2x128_si256(bytes, bytes, 0x11);  // high bytes, in both lanes
}

// 32 outputs from 16 packed bytes at p through the block's table.
template <typename T>
inline void lookup32_avx2(const uint8_t* p, __m256i t0, __m256i t1, T* out) {
  const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i lo = _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x0F)), 8);
  const __m256i idx = _mm256_or_si256(_mm256_srli_epi16(w, 4), lo);  // bytes hi0, lo0, hi1, ...
  if constexpr (std::is_same_v<T, float>) {
    const __m256 f0 = _mm256_castsi256_ps(t0), f1 = _mm256_castsi256_ps(t1);
    for (int j = 0; j < 4; ++j) {
      const __m128i part = j < 2 ? _mm256_castsi256_si128(idx) : _mm256_extracti128_si256(idx, 1);
      const __m256i i = _mm256_cvtepu8_epi32(j % 2 == 0 ? part : _mm_srli_si128(part, 8));
      const __m256 mask = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28));  // bit 3 -> sign
      _mm256_storeu_ps(out + 8 * j, _mm256_blendv_ps(_mm256_permutevar8x32_ps(f0, i),
                                                     _mm256_permutevar8x32_ps(f1, i), mask));
    }
  } else {
    const __m256i l = _mm256_shuffle_epi8(t0, idx), h = _mm256_shuffle_epi8(t1, idx);
    const __m256i a = _mm256_unpacklo_epi8(l, h);  // elements 0-7 | 16-23
    const __m256i b = _mm256_unpackhi_epi8(l, h);  // elements 8-15 | 24-31
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_permute2x128_si256(a, b, 0x31));
  }
}

template <typename T>
void range_generic(const NF4Weight& w, int64_t start, int64_t count, T* out) {
  const int64_t end = start + count;
  int64_t e = start;
  for (int64_t b = start / w.blocksize; e < end; ++b) {
    const int64_t stop = std::min(end, (b + 1) * w.blocksize);
    const float s = block_absmax(w, b);
    if (e & 1) {  // odd start: one scalar element to reach a byte boundary
      store_scalar(out, e - start, kNF4[nibble(w.packed, e)] * s);
      ++e;
    }
    if (e + 32 <= stop) {
      __m256i t0, t1;
      block_table_avx2<T>(s, t0, t1);
      for (; e + 32 <= stop; e += 32) lookup32_avx2(w.packed + (e >> 1), t0, t1, out + (e - start));
    }
    for (; e < stop; ++e) store_scalar(out, e - start, kNF4[nibble(w.packed, e)] * s);
  }
}

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// 16 packed bytes -> the 32 codebook indices in element order (hi0, lo0, hi1, lo1, ...).
AVX512_TARGET inline void indices32(const uint8_t* p, __m512i& i0, __m512i& i1) {
  const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i lo = _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x0F)), 8);
  const __m256i idx = _mm256_or_si256(_mm256_srli_epi16(w, 4), lo);
  i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(idx));
  i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(idx, 1));
}

// Scales of blocks [b, b + 16) (fewer at the end of the weight) into sc. Sixteen nested scales
// sharing one absmax2 entry are one gather, one multiply and one add: the same two separately
// rounded fp32 operations as block_absmax, so the results are bitwise the same.
AVX512_TARGET inline void scales16(const NF4Weight& w, int64_t b, int64_t nblocks, float* sc) {
  const int64_t n = std::min<int64_t>(16, nblocks - b);
  if (n == 16 && w.absmax_f != nullptr) {
    _mm512_store_ps(sc, _mm512_loadu_ps(w.absmax_f + b));
  } else if (n == 16 && w.shift2 >= 0 && (b >> w.shift2) == ((b + 15) >> w.shift2)) {
    const __m512i q =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qabsmax + b)));
    const __m512 v = _mm512_mul_ps(_mm512_i32gather_ps(q, w.code2, 4),
                                   _mm512_set1_ps(w.absmax2[b >> w.shift2]));
    _mm512_store_ps(sc, _mm512_add_ps(v, _mm512_set1_ps(w.offset)));
  } else {
    for (int64_t j = 0; j < n; ++j) sc[j] = block_absmax(w, b + j);
  }
}

// The block's 16 possible outputs NF4[i] * s, each rounded to T exactly as the per-element
// path would round it (fp32 product, then round-to-nearest-even), as one lookup table, so every
// output is one table lookup and a block costs one multiply and one rounding of 16 values.
// bf16/fp16: 16 words, repeated in both halves (vpermw reads 5 index bits; the fifth is then
// free to hold garbage, which saves masking the low nibble). fp32: 16 floats (vpermps).
template <typename T>
AVX512_TARGET inline __m512i block_table(__m512 lut, float s) {
  const __m512 v = _mm512_mul_ps(lut, _mm512_set1_ps(s));
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_castps_si512(v);
  } else if constexpr (std::is_same_v<T, uint16_t>) {
    const __m512i a = _mm512_castps_si512(v);
    const __m512i round = _mm512_add_epi32(
        _mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(a, 16), _mm512_set1_epi32(1)));
    // The high word of every rounded dword, twice: words 2i+1 for i = 0..15, 0..15.
    const __m512i pick = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1,
                                          31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutexvar_epi16(pick, _mm512_add_epi32(a, round));
  } else {
    const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_broadcast_i64x4(h);
  }
}

template <typename T>
AVX512_TARGET inline void store64B(T* out, __m512i r, bool stream) {
  // Streaming stores skip the read-for-ownership of output lines we fully overwrite.
  if (stream && (reinterpret_cast<uintptr_t>(out) & 63) == 0) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(out), r);
  } else {
    _mm512_storeu_si512(out, r);
  }
}

// 32 outputs from 16 packed bytes at p through the block's table.
template <typename T>
AVX512_TARGET inline void lookup32(const uint8_t* p, __m512i table, T* out, bool stream) {
  if constexpr (std::is_same_v<T, float>) {
    __m512i i0, i1;
    indices32(p, i0, i1);
    const __m512 t = _mm512_castsi512_ps(table);
    store64B(out, _mm512_castps_si512(_mm512_permutexvar_ps(i0, t)), stream);
    store64B(out + 16, _mm512_castps_si512(_mm512_permutexvar_ps(i1, t)), stream);
  } else {
    // Byte i -> dword (byte << 16) | (byte >> 4): the low word indexes element 2i by the high
    // nibble, the high word element 2i+1 by the low nibble (bits above it are ignored or hit
    // the table's repeated half).
    const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i idx = _mm512_or_si512(_mm512_slli_epi32(d, 16), _mm512_srli_epi32(d, 4));
    store64B(out, _mm512_permutexvar_epi16(idx, table), stream);
  }
}

template <typename T>
AVX512_TARGET void range_avx512(const NF4Weight& w, int64_t start, int64_t count, T* out,
                                bool stream) {
  const __m512 lut = _mm512_load_ps(kNF4);
  const int64_t end = start + count;
  const int64_t nblocks = (w.numel + w.blocksize - 1) / w.blocksize;
  alignas(64) float sc[16];
  int64_t sc_base = -16;  // sc holds the scales of blocks [sc_base, sc_base + 16)
  int64_t e = start;
  if (w.blocksize == 64 && start % 64 == 0) {
    // bitsandbytes' default layout from a block boundary: whole blocks, 16 at a time, no
    // per-element branches (one table, two lookups per block).
    const int64_t whole = count / 64;
    const uint8_t* p = w.packed + (start >> 1);
    int64_t b = start / 64;
    for (int64_t i = 0; i < whole; i += 16, b += 16) {
      scales16(w, b, nblocks, sc);
      const int64_t n = std::min<int64_t>(16, whole - i);
      for (int64_t j = 0; j < n; ++j) {
        const __m512i table = block_table<T>(lut, sc[j]);
        T* o = out + (i + j) * 64;
        lookup32(p + (i + j) * 32, table, o, stream);
        lookup32(p + (i + j) * 32 + 16, table, o + 32, stream);
      }
    }
    e = start + whole * 64;
  }
  for (int64_t b = e / w.blocksize; e < end; ++b) {
    if (b - sc_base >= 16) {
      scales16(w, b, nblocks, sc);
      sc_base = b;
    }
    const float s = sc[b - sc_base];
    const int64_t stop = std::min(end, (b + 1) * w.blocksize);
    if (e & 1) {  // odd start: one scalar element to reach a byte boundary
      store_scalar(out, e - start, kNF4[nibble(w.packed, e)] * s);
      ++e;
    }
    if (e + 32 <= stop) {
      const __m512i table = block_table<T>(lut, s);
      for (; e + 32 <= stop; e += 32) {
        lookup32(w.packed + (e >> 1), table, out + (e - start), stream);
      }
    }
    for (; e < stop; ++e) store_scalar(out, e - start, kNF4[nibble(w.packed, e)] * s);
  }
}

template <typename T>
void range_typed(const NF4Weight& w, int64_t start, int64_t count, T* out, bool stream) {
  if (use_avx512()) {
    range_avx512(w, start, count, out, stream);
  } else {
    range_generic(w, start, count, out);
  }
}

}  // namespace

void dequantize_range(const NF4Weight& w, int64_t start, int64_t count, void* out,
                      at::ScalarType dtype, bool stream) {
  switch (dtype) {
    case at::kFloat:
      range_typed(w, start, count, static_cast<float*>(out), stream);
      break;
    case at::kBFloat16:
      range_typed(w, start, count, static_cast<uint16_t*>(out), stream);
      break;
    case at::kHalf:
      range_typed(w, start, count, static_cast<c10::Half*>(out), stream);
      break;
    default:
      TORCH_CHECK(false, "tunebook nf4: output dtype must be bf16, fp16 or fp32, got ", dtype);
  }
}

namespace {

at::Tensor dequantize_nf4_cpu(const at::Tensor& packed, const at::Tensor& qabsmax,
                              const at::Tensor& code2, const at::Tensor& absmax2, double offset,
                              int64_t blocksize, int64_t blocksize2, at::IntArrayRef shape,
                              at::ScalarType dtype) {
  int64_t numel = 1;
  for (const int64_t d : shape) numel *= d;
  const NF4Weight w =
      make_weight(packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, numel);
  at::Tensor out = empty_output(shape, packed.options().dtype(dtype));
  if (numel == 0) return out;
  // Outputs far bigger than the caches are written with streaming stores.
  // Plain stores: on recycled or huge-page outputs the lines are cache-warm and streaming
  // stores measured slower; the streaming path stays for callers of dequantize_range.
  const bool stream = false;
  auto* base = static_cast<char*>(out.data_ptr());
  const int64_t es = out.element_size();
  // Work in whole blocks (chunks of them) so every thread reads each scale once.
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  // Weights under 1M elements stay on one thread: waking the others costs more than it saves
  // on a shared, oversubscribed machine (measured: a 1536x576 layer took 5-7x longer on two
  // threads than on one under load); a dedicated box may prefer a lower grain.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / blocksize);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t start = b0 * blocksize;
    const int64_t stop = std::min(numel, b1 * blocksize);
    dequantize_range(w, start, stop - start, base + start * es, dtype, stream);
    if (stream) _mm_sfence();  // streamed stores are weakly ordered: drain before joining
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tunebook, CPU, m) { m.impl("dequantize_nf4", &dequantize_nf4_cpu); }

}  // namespace tunebook
