#include "kv_transfer/staging_slots.h"

#include <iterator>

#include "absl/strings/str_cat.h"

namespace duet::kv_transfer::internal {

StagingSlots::StagingSlots(int32_t num_slots, absl::Duration quarantine)
    : num_slots_(num_slots), quarantine_(quarantine) {
  if (num_slots > 0) free_.emplace(0, num_slots);
}

void StagingSlots::Reap(absl::Time now) {
  while (!quarantined_.empty() && quarantined_.front().until <= now) {
    Free(quarantined_.front().first, quarantined_.front().n);
    quarantined_.pop_front();
  }
}

absl::StatusOr<int32_t> StagingSlots::Allocate(int32_t n, absl::Time now) {
  Reap(now);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < n) continue;
    const int32_t first = it->first;
    const int32_t rest = it->second - n;
    free_.erase(it);
    if (rest > 0) free_.emplace(first + n, rest);
    return first;
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("no run of ", n, " free KV staging slots (", NumFree(now),
                   " of ", num_slots_, " free, ", quarantined_.size(),
                   " runs in quarantine); raise UcxOptions::staging_blocks"));
}

void StagingSlots::Free(int32_t first, int32_t n) {
  auto [it, inserted] = free_.emplace(first, n);
  // Merge with the following run, then with the preceding one.
  if (auto next = std::next(it);
      next != free_.end() && it->first + it->second == next->first) {
    it->second += next->second;
    free_.erase(next);
  }
  if (it != free_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      free_.erase(it);
    }
  }
}

void StagingSlots::Quarantine(int32_t first, int32_t n, absl::Time now) {
  quarantined_.push_back(Held{now + quarantine_, first, n});
}

int32_t StagingSlots::NumFree(absl::Time now) {
  Reap(now);
  int32_t total = 0;
  for (const auto& [first, n] : free_) total += n;
  return total;
}

}  // namespace duet::kv_transfer::internal
