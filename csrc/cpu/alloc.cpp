// Large output buffers for the NF4 kernels: 2 MiB aligned, madvise(MADV_HUGEPAGE), and kept in
// a small bounded cache after the tensor dies so the next same-sized output skips page faults
// (a QLoRA step dequantizes the same layer shapes over and over).
#include <sys/mman.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "common.h"

namespace tunebook {
namespace {

constexpr int64_t kMinBytes = int64_t{32} << 20;
constexpr size_t kHuge = size_t{2} << 20;

struct Cache {
  std::mutex mu;
  std::vector<std::pair<size_t, void*>> free;  // (size, pointer)
  size_t held = 0;
  size_t limit = 0;
};

Cache& cache() {
  // Leaked on purpose: tensors may die after static destructors have run.
  static Cache* c = [] {
    auto* k = new Cache();
    const char* env = std::getenv("TUNEBOOK_NF4_CACHE_MB");
    k->limit = (env != nullptr ? std::strtoull(env, nullptr, 10) : 1024) << 20;
    return k;
  }();
  return *c;
}

void release(void* p, size_t size) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.held + size <= c.limit) {
      c.free.emplace_back(size, p);
      c.held += size;
      return;
    }
  }
  std::free(p);
}

void* acquire(size_t size) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto it = c.free.begin(); it != c.free.end(); ++it) {
      if (it->first == size) {
        void* p = it->second;
        c.held -= size;
        c.free.erase(it);
        return p;
      }
    }
  }
  void* p = std::aligned_alloc(kHuge, size);
  if (p != nullptr) madvise(p, size, MADV_HUGEPAGE);  // advisory; ignored without THP
  return p;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef shape, const at::TensorOptions& opts) {
  int64_t numel = 1;
  for (const int64_t d : shape) numel *= d;
  const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(opts.dtype().toScalarType()));
  if (bytes < kMinBytes) return at::empty(shape, opts);
  const size_t size = (static_cast<size_t>(bytes) + kHuge - 1) & ~(kHuge - 1);
  void* p = acquire(size);
  if (p == nullptr) return at::empty(shape, opts);
  return at::from_blob(p, shape, [size](void* q) { release(q, size); }, opts);
}

}  // namespace tunebook
