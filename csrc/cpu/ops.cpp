// Schemas of the tunebook ops. Each kernel folder registers its CPU implementation with
// TORCH_LIBRARY_IMPL; fake (meta) implementations live in finetune_core/kernels/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(tunebook, m) {
  // Weight parts are bitsandbytes' QuantState: packed = Params4bit data, qabsmax = absmax
  // (uint8 when nested, else fp32), code2/absmax2/offset/blocksize2 = state2 and offset.
  m.def(
      "dequantize_nf4(Tensor packed, Tensor qabsmax, Tensor code2, Tensor absmax2, float offset, "
      "int blocksize, int blocksize2, int[] shape, ScalarType dtype) -> Tensor");
  // x @ W.T for W of shape [N, K]; output dtype = x dtype.
  m.def(
      "gemv_nf4(Tensor x, Tensor packed, Tensor qabsmax, Tensor code2, Tensor absmax2, "
      "float offset, int blocksize, int blocksize2, int[] shape) -> Tensor");
}
