// TORCH_LIBRARY_IMPL(tunebook, CUDA): the CUDA kernels behind the same ops as csrc/cpu (the
// schemas live in csrc/cpu/ops.cpp, so the CPU extension is loaded first). Built only where
// torch has CUDA; the kernels themselves (*.cu) are plain CUDA behind nf4_cuda.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "nf4_cuda.h"

namespace tunebook {
namespace {

int dtype_code(at::ScalarType dt) {
  switch (dt) {
    case at::kFloat:
      return TUNEBOOK_F32;
    case at::kBFloat16:
      return TUNEBOOK_BF16;
    case at::kHalf:
      return TUNEBOOK_F16;
    default:
      TORCH_CHECK(false, "tunebook nf4 (cuda): dtype must be bf16, fp16 or fp32, got ", dt);
  }
}

TunebookNF4 make_weight(const at::Tensor& packed, const at::Tensor& qabsmax,
                        const at::Tensor& code2, const at::Tensor& absmax2, double offset,
                        int64_t blocksize, int64_t blocksize2, int64_t numel) {
  TORCH_CHECK(packed.is_cuda() && packed.is_contiguous(),
              "tunebook nf4 (cuda): packed weight must be a contiguous CUDA tensor");
  TORCH_CHECK(packed.element_size() * packed.numel() >= (numel + 1) / 2,
              "tunebook nf4 (cuda): packed weight holds fewer than numel/2 bytes");
  TORCH_CHECK(blocksize > 0 && blocksize % 2 == 0, "tunebook nf4 (cuda): blocksize must be even");
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  TunebookNF4 w{};
  w.packed = static_cast<const uint8_t*>(packed.data_ptr());
  w.blocksize = blocksize;
  w.blocksize2 = blocksize2;
  w.numel = numel;
  TORCH_CHECK(qabsmax.device() == packed.device() && qabsmax.is_contiguous() &&
                  qabsmax.numel() >= blocks,
              "tunebook nf4 (cuda): absmax must be contiguous, on the weight's device, one per block");
  if (qabsmax.scalar_type() == at::kFloat) {  // compress_statistics=False
    w.absmax_f = qabsmax.data_ptr<float>();
    return w;
  }
  TORCH_CHECK(qabsmax.scalar_type() == at::kByte, "tunebook nf4 (cuda): qabsmax must be uint8");
  TORCH_CHECK(code2.device() == packed.device() && code2.scalar_type() == at::kFloat &&
                  code2.numel() == 256 && code2.is_contiguous(),
              "tunebook nf4 (cuda): code2 must be bitsandbytes' 256-entry fp32 dynamic map");
  TORCH_CHECK(blocksize2 > 0, "tunebook nf4 (cuda): blocksize2 must be positive");
  TORCH_CHECK(absmax2.device() == packed.device() && absmax2.scalar_type() == at::kFloat &&
                  absmax2.is_contiguous() &&
                  absmax2.numel() >= (blocks + blocksize2 - 1) / blocksize2,
              "tunebook nf4 (cuda): absmax2 must be fp32 with one entry per 8-bit block");
  w.qabsmax = qabsmax.data_ptr<uint8_t>();
  w.code2 = code2.data_ptr<float>();
  w.absmax2 = absmax2.data_ptr<float>();
  w.offset = static_cast<float>(offset);
  return w;
}

void check_launch(int err, const char* what) {
  TORCH_CHECK(err == 0, "tunebook ", what, " (cuda): launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
}

at::Tensor dequantize_nf4_cuda(const at::Tensor& packed, const at::Tensor& qabsmax,
                               const at::Tensor& code2, const at::Tensor& absmax2, double offset,
                               int64_t blocksize, int64_t blocksize2, at::IntArrayRef shape,
                               at::ScalarType dtype) {
  int64_t numel = 1;
  for (const int64_t d : shape) numel *= d;
  const c10::cuda::CUDAGuard guard(packed.device());
  const TunebookNF4 w =
      make_weight(packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, numel);
  const int code = dtype_code(dtype);
  at::Tensor out = at::empty(shape, packed.options().dtype(dtype));
  check_launch(tunebook_nf4_dequantize_cuda(&w, out.data_ptr(), code,
                                            c10::cuda::getCurrentCUDAStream().stream()),
               "dequantize_nf4");
  return out;
}

at::Tensor gemv_nf4_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& qabsmax,
                         const at::Tensor& code2, const at::Tensor& absmax2, double offset,
                         int64_t blocksize, int64_t blocksize2, at::IntArrayRef shape) {
  TORCH_CHECK(shape.size() == 2, "tunebook gemv_nf4 (cuda): weight shape must be [N, K]");
  const int64_t N = shape[0], K = shape[1];
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == K, "tunebook gemv_nf4 (cuda): x must end in K=", K);
  TORCH_CHECK(x.device() == packed.device(), "tunebook gemv_nf4 (cuda): x and W on one device");
  const int code = dtype_code(x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  if (K == 0) return at::zeros(out_shape, x.options());
  const at::Tensor x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  if (M == 0 || N == 0) return at::zeros(out_shape, x.options());
  if (M > TUNEBOOK_GEMV_MAX_ROWS) {
    // Many tokens: tensor cores win; dequantize once (fast, one launch) and let cuBLAS multiply.
    const at::Tensor wt = dequantize_nf4_cuda(packed, qabsmax, code2, absmax2, offset, blocksize,
                                              blocksize2, shape, x.scalar_type());
    return at::matmul(x2, wt.t()).view(out_shape);
  }
  const TunebookNF4 w =
      make_weight(packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, N * K);
  at::Tensor y = at::empty({M, N}, x.options());
  check_launch(tunebook_nf4_gemv_cuda(&w, x2.data_ptr(), y.data_ptr(), M, N, K, code,
                                      c10::cuda::getCurrentCUDAStream().stream()),
               "gemv_nf4");
  return y.view(out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(tunebook, CUDA, m) {
  m.impl("dequantize_nf4", &dequantize_nf4_cuda);
  m.impl("gemv_nf4", &gemv_nf4_cuda);
}

}  // namespace tunebook
