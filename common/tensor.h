// Non-owning, contiguous (row-major) tensor views. Ownership of the memory
// belongs to whoever allocated it (a backend, a mmapped checkpoint, a vector).
#ifndef DUET_COMMON_TENSOR_H_
#define DUET_COMMON_TENSOR_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "common/dtype.h"

namespace duet {

enum class Device : uint8_t { kCpu = 0, kCuda = 1 };

using Shape = absl::InlinedVector<int64_t, 4>;

// Product of the dimensions (1 for a scalar shape {}).
int64_t NumElements(const Shape& shape);
// "[2, 3, 4]".
std::string ShapeString(const Shape& shape);

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;
  Device device = Device::kCpu;

  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape.size()); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// OK when `t` has exactly `dtype` and `shape`; otherwise InvalidArgument
// naming `what` and both shapes. Used at op boundaries.
absl::Status CheckTensor(const TensorView& t, DType dtype, const Shape& shape,
                         const char* what);

}  // namespace duet

#endif  // DUET_COMMON_TENSOR_H_
