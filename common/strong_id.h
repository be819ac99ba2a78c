// Strong integer ids: a RequestId cannot be passed where a BlockId is wanted.
#ifndef DUET_COMMON_STRONG_ID_H_
#define DUET_COMMON_STRONG_ID_H_

#include <compare>
#include <cstdint>
#include <ostream>
#include <utility>

namespace duet {

template <typename Tag, typename Rep = int64_t>
class StrongId {
 public:
  using ValueType = Rep;
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep value) : value_(value) {}
  constexpr Rep value() const { return value_; }
  constexpr auto operator<=>(const StrongId&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const StrongId& id) {
    return H::combine(std::move(h), id.value_);
  }
  friend std::ostream& operator<<(std::ostream& os, const StrongId& id) {
    return os << id.value_;
  }

 private:
  Rep value_{};
};

using RequestId = StrongId<struct RequestIdTag, uint64_t>;
using BlockId = StrongId<struct BlockIdTag, int32_t>;
using NodeId = StrongId<struct NodeIdTag, uint64_t>;

}  // namespace duet

#endif  // DUET_COMMON_STRONG_ID_H_
