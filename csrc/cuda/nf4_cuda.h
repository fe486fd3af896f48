// C interface of the CUDA NF4 kernels. The .cu files include no torch header (they compile with
// plain nvcc, which is how `make test` checks them on machines whose torch has no CUDA), and
// the torch binding (ops_cuda.cpp) includes no CUDA header beyond what ATen brings.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// One NF4 weight in bitsandbytes' layout (see csrc/README.md). Plain absmax
// (compress_statistics=False) sets absmax_f and leaves qabsmax/code2/absmax2 null.
typedef struct TunebookNF4 {
  const uint8_t* packed;
  const uint8_t* qabsmax;
  const float* absmax_f;
  const float* code2;
  const float* absmax2;
  float offset;
  int64_t blocksize;
  int64_t blocksize2;
  int64_t numel;
} TunebookNF4;

// Output / activation dtypes.
enum { TUNEBOOK_F32 = 0, TUNEBOOK_BF16 = 1, TUNEBOOK_F16 = 2 };

// out[numel] = NF4 weight in dtype, bitwise equal to bitsandbytes' dequantize_4bit.
// Returns a cudaError_t (0 = success) from the launch.
int tunebook_nf4_dequantize_cuda(const TunebookNF4* w, void* out, int dtype, void* stream);

// y[M, N] = x[M, K] @ W.T for W [N, K], 1 <= M <= 16 (TUNEBOOK_GEMV_MAX_ROWS); x, y in dtype,
// contiguous. Accumulates in fp32; each packed weight byte is read once.
int tunebook_nf4_gemv_cuda(const TunebookNF4* w, const void* x, void* y, int64_t M, int64_t N,
                           int64_t K, int dtype, void* stream);

#define TUNEBOOK_GEMV_MAX_ROWS 16

#ifdef __cplusplus
}
#endif
