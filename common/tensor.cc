#include "common/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace duet {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckTensor(const TensorView& t, DType dtype, const Shape& shape,
                         const char* what) {
  if (t.data == nullptr && NumElements(shape) > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null data"));
  }
  if (t.dtype != dtype || t.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected ", DTypeName(dtype), ShapeString(shape), ", got ",
        DTypeName(t.dtype), ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

}  // namespace duet
