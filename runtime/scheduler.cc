#include "runtime/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::runtime {

Scheduler::Scheduler(const SchedulerOptions& options)
    : options_(options), pool_(options.num_blocks) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    const SchedulerOptions& options) {
  if (options.block_size <= 0 || options.num_blocks <= 0 ||
      options.max_num_batched_tokens <= 0 || options.max_num_seqs <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: block_size (", options.block_size, "), num_blocks (",
        options.num_blocks, "), max_num_batched_tokens (",
        options.max_num_batched_tokens, ") and max_num_seqs (",
        options.max_num_seqs, ") must all be > 0"));
  }
  return std::unique_ptr<Scheduler>(new Scheduler(options));
}

absl::StatusOr<std::vector<BlockId>> Scheduler::Reserve(int32_t n) {
  if (n < 0) return absl::InvalidArgumentError("Reserve: negative count");
  const int64_t owed = num_blocks_owed();
  if (owed > 0 && pool_.num_free() - n < owed) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: ", pool_.num_free(), " blocks free, ",
                     owed, " owed to preempted requests waiting to resume"));
  }
  return pool_.Allocate(n);
}

absl::StatusOr<Scheduler::PromptBlocks> Scheduler::ReservePrompt(
    std::span<const int32_t> prompt, int32_t n, int32_t max_cached) {
  PromptBlocks out;
  if (options_.enable_prefix_caching && !prompt.empty()) {
    AcquireLeading(
        prompt,
        std::min({max_cached, n,
                  static_cast<int32_t>(prompt.size()) / options_.block_size}),
        out.blocks, out.cached_uids);
  }
  const auto cached = static_cast<int32_t>(out.blocks.size());
  absl::StatusOr<std::vector<BlockId>> fresh = Reserve(n - cached);
  if (!fresh.ok()) {
    // Hits only count for reservations that happen.
    if (!pool_.Free(out.blocks).ok()) std::abort();
    return fresh.status();
  }
  if (options_.enable_prefix_caching && !prompt.empty()) {
    prefix_queries_ += static_cast<int64_t>(prompt.size());
    prefix_hits_ += int64_t{cached} * options_.block_size;
  }
  out.blocks.insert(out.blocks.end(), fresh->begin(), fresh->end());
  return out;
}

int64_t Scheduler::num_blocks_owed() const {
  int64_t owed = 0;
  for (RequestId id : waiting_) {
    const Sequence& s = *seqs_.at(id);
    owed += MissingBlocks(s, static_cast<int64_t>(s.tokens.size()));
  }
  return owed;
}

absl::Status Scheduler::Unreserve(std::span<const BlockId> blocks) {
  return pool_.Free(blocks);
}

int32_t Scheduler::MissingBlocks(const Sequence& s, int64_t num_tokens) const {
  return std::max<int32_t>(
      0, model::BlocksForTokens(num_tokens, options_.block_size) -
             static_cast<int32_t>(s.blocks.size()));
}

absl::Status Scheduler::Add(RequestId id, std::vector<int32_t> tokens,
                            int32_t num_prompt_tokens, int32_t num_computed,
                            std::vector<BlockId> blocks,
                            int64_t max_total_tokens,
                            std::vector<uint64_t> cached_uids) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id.value(), " has no tokens"));
  }
  const auto n = static_cast<int32_t>(tokens.size());
  if (num_prompt_tokens <= 0 || num_prompt_tokens > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id.value(), ": num_prompt_tokens ",
                     num_prompt_tokens, " outside [1, ", n, "]"));
  }
  if (num_computed < 0 || num_computed >= n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", id.value(), ": num_computed ", num_computed,
        " outside [0, ", n, "): at least one token must be left to run"));
  }
  const int32_t need = model::BlocksForTokens(
      std::max<int64_t>(n, max_total_tokens), options_.block_size);
  if (need > pool_.num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id.value(), " can need ", need,
                     " KV blocks; the pool has only ", pool_.num_blocks()));
  }
  if (model::BlocksForTokens(num_computed, options_.block_size) >
      static_cast<int32_t>(blocks.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id.value(), ": ", blocks.size(),
                     " blocks cannot hold ", num_computed, " computed tokens"));
  }
  if (cached_uids.size() > blocks.size() ||
      (!cached_uids.empty() && !options_.enable_prefix_caching)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id.value(), ": ", cached_uids.size(),
                     " cached blocks without prefix caching or beyond its ",
                     blocks.size(), " blocks"));
  }
  // The blocks must be ones Reserve handed out and nobody else holds (or,
  // for the leading cached ones, ones ReservePrompt shared): a bookkeeping
  // slip here would otherwise surface much later, when freeing them fails.
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int32_t refs = pool_.RefCount(blocks[i]);
    if ((i < cached_uids.size() ? refs < 1 : refs != 1) ||
        std::find(blocks.begin(), blocks.begin() + i, blocks[i]) !=
            blocks.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", id.value(), ": block ", blocks[i].value(),
                       " is not a reserved block it alone holds"));
    }
  }
  if (seqs_.contains(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("sequence ", id.value(), " is already scheduled"));
  }
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens = std::move(tokens);
  s->num_prompt_tokens = num_prompt_tokens;
  s->num_computed = num_computed;
  s->blocks = std::move(blocks);
  s->block_uids = std::move(cached_uids);
  seqs_.emplace(id, std::move(s));
  waiting_.push_back(id);
  return absl::OkStatus();
}

void Scheduler::FreeBlocks(Sequence& s) {
  // Blocks of a sequence came from this pool and are listed once, so Free
  // cannot fail; a failure would be a bookkeeping bug worth surfacing.
  const absl::Status freed = pool_.Free(s.blocks);
  if (!freed.ok()) std::abort();
  s.blocks.clear();
  s.block_uids.clear();
}

void Scheduler::AcquireLeading(std::span<const int32_t> tokens, int32_t most,
                               std::vector<BlockId>& blocks,
                               std::vector<uint64_t>& uids) {
  const int32_t bs = options_.block_size;
  uint64_t parent = model::kNoParentBlock;
  for (int32_t j = 0; j < most; ++j) {
    std::optional<model::CachedBlock> hit =
        pool_.Acquire(parent, tokens.subspan(j * bs, bs));
    if (!hit.has_value()) break;
    blocks.push_back(hit->id);
    uids.push_back(hit->uid);
    parent = hit->uid;
  }
}

void Scheduler::AcquirePrefix(Sequence& s) {
  const int32_t bs = options_.block_size;
  // The last known token always runs: its logits are the next draw.
  AcquireLeading(s.tokens, (static_cast<int32_t>(s.tokens.size()) - 1) / bs,
                 s.blocks, s.block_uids);
  s.num_computed = static_cast<int32_t>(s.blocks.size()) * bs;
}

void Scheduler::RegisterFullBlocks(Sequence& s) {
  const int32_t bs = options_.block_size;
  const size_t full = static_cast<size_t>(s.num_computed / bs);
  while (s.block_uids.size() < full && s.block_uids.size() < s.blocks.size()) {
    const size_t j = s.block_uids.size();
    const uint64_t parent =
        j == 0 ? model::kNoParentBlock : s.block_uids[j - 1];
    absl::StatusOr<uint64_t> uid =
        pool_.Register(s.blocks[j], parent,
                       std::span<const int32_t>(s.tokens).subspan(j * bs, bs));
    if (!uid.ok()) return;  // cannot happen: the block is ours, unregistered
    s.block_uids.push_back(*uid);
  }
}

void Scheduler::Preempt(Sequence& s) {
  FreeBlocks(s);
  s.num_computed = 0;
  s.running = false;
  ++s.num_preemptions;
  ++num_preemptions_;
  running_.erase(std::find(running_.begin(), running_.end(), s.id));
  waiting_.push_front(s.id);
}

absl::StatusOr<SchedulingPolicy> ParseSchedulingPolicy(absl::string_view name) {
  if (name == "piggyback") return SchedulingPolicy::kPiggyback;
  if (name == "prefill-first") return SchedulingPolicy::kPrefillFirst;
  return absl::InvalidArgumentError(absl::StrCat(
      "--scheduling must be piggyback or prefill-first, got '", name, "'"));
}

const char* SchedulingPolicyName(SchedulingPolicy policy) {
  return policy == SchedulingPolicy::kPiggyback ? "piggyback" : "prefill-first";
}

bool Scheduler::PlanRunning(size_t i, bool may_preempt, int32_t& budget,
                            StepPlan& plan) {
  Sequence& s = *seqs_.at(running_[i]);
  const int32_t remaining =
      static_cast<int32_t>(s.tokens.size()) - s.num_computed;
  if (remaining <= 0) return true;  // finished; the caller removes it
  const int32_t len = std::min(remaining, budget);
  const int32_t need = MissingBlocks(s, int64_t{s.num_computed} + len);
  // Running prefills hold the blocks of all their known tokens from
  // admission, so only decodes grow; a pass that may not preempt (some of
  // the sequences behind this one are planned already) leaves one that
  // would need to for the next step.
  if (!may_preempt && need > pool_.num_free()) return true;
  while (need > pool_.num_free()) {
    // Victims come from the back, so none was planned yet this step.
    Sequence& victim = *seqs_.at(running_.back());
    Preempt(victim);
    plan.preempted.push_back(victim.id);
    if (&victim == &s) return false;
  }
  auto blocks = pool_.Allocate(need);
  if (!blocks.ok()) std::abort();  // checked against num_free above
  s.blocks.insert(s.blocks.end(), blocks->begin(), blocks->end());
  plan.chunks.push_back({s.id, s.num_computed, len, len == remaining});
  budget -= len;
  return true;
}

bool Scheduler::IsDecode(size_t i) const {
  const Sequence& s = *seqs_.at(running_[i]);
  return static_cast<int32_t>(s.tokens.size()) - s.num_computed == 1;
}

bool Scheduler::PlanDecodes(int32_t& budget, StepPlan& plan) {
  // Preemption may shrink running_ from the back while we walk it.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    if (!IsDecode(i)) continue;
    if (!PlanRunning(i, /*may_preempt=*/true, budget, plan)) return false;
  }
  return true;
}

void Scheduler::PlanPrefills(int32_t& budget, StepPlan& plan) {
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    // Decodes planned this step still have one token to compute until
    // Update: this skips them too.
    if (IsDecode(i)) continue;
    PlanRunning(i, /*may_preempt=*/false, budget, plan);
  }
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int32_t budget = options_.max_num_batched_tokens;
  if (options_.policy == SchedulingPolicy::kPrefillFirst) {
    PlanPrefills(budget, plan);
    Admit(budget, plan);
    if (plan.empty()) PlanDecodes(budget, plan);
    return plan;
  }
  if (!PlanDecodes(budget, plan)) return plan;
  PlanPrefills(budget, plan);
  // Admission waits while preemption is freeing room for running work.
  if (!plan.preempted.empty()) return plan;
  Admit(budget, plan);
  return plan;
}

void Scheduler::Admit(int32_t& budget, StepPlan& plan) {
  bool blocked = false;
  for (auto it = waiting_.begin();
       it != waiting_.end() && budget > 0 &&
       static_cast<int32_t>(running_.size()) < options_.max_num_seqs;) {
    Sequence& s = *seqs_.at(*it);
    const bool lookup = options_.enable_prefix_caching && s.num_computed == 0 &&
                        s.blocks.empty();
    if (lookup && !blocked) AcquirePrefix(s);
    const int32_t need =
        MissingBlocks(s, static_cast<int64_t>(s.tokens.size()));
    if (need > 0 && (blocked || need > pool_.num_free())) {
      blocked = true;  // FCFS for blocks: nothing overtakes it
      if (lookup) {
        // Give the cached blocks back until it can be admitted whole.
        FreeBlocks(s);
        s.num_computed = 0;
      }
      ++it;
      continue;
    }
    if (lookup) {
      s.num_cached_tokens = s.num_computed;
      prefix_queries_ += static_cast<int64_t>(s.tokens.size());
      prefix_hits_ += s.num_computed;
    }
    auto blocks = pool_.Allocate(need);
    if (!blocks.ok()) std::abort();
    s.blocks.insert(s.blocks.end(), blocks->begin(), blocks->end());
    it = waiting_.erase(it);
    running_.push_back(s.id);
    s.running = true;
    const int32_t remaining =
        static_cast<int32_t>(s.tokens.size()) - s.num_computed;
    const int32_t len = std::min(remaining, budget);
    plan.chunks.push_back({s.id, s.num_computed, len, len == remaining});
    budget -= len;
  }
}

absl::Status Scheduler::Update(const StepPlan& plan,
                               std::span<const int32_t> sampled) {
  const auto samples =
      std::count_if(plan.chunks.begin(), plan.chunks.end(),
                    [](const ScheduledChunk& c) { return c.sample; });
  if (static_cast<size_t>(samples) != sampled.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Update: ", sampled.size(), " sampled tokens for ",
                     samples, " sampling chunks"));
  }
  size_t next = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    const int32_t token = c.sample ? sampled[next++] : 0;
    auto it = seqs_.find(c.id);
    if (it == seqs_.end()) continue;  // removed after planning
    Sequence& s = *it->second;
    if (!s.running || s.num_computed != c.start) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Update: sequence ", c.id.value(), " is not where the plan left it"));
    }
    s.num_computed += c.len;
    if (c.sample) s.tokens.push_back(token);
    if (options_.enable_prefix_caching) RegisterFullBlocks(s);
  }
  return absl::OkStatus();
}

bool Scheduler::Remove(RequestId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  FreeBlocks(*it->second);
  Detach(id);
  return true;
}

std::vector<BlockId> Scheduler::Detach(RequestId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return {};
  Sequence& s = *it->second;
  std::vector<BlockId> blocks = std::move(s.blocks);
  if (s.running) {
    running_.erase(std::find(running_.begin(), running_.end(), id));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
  }
  seqs_.erase(it);
  return blocks;
}

const Sequence* Scheduler::Find(RequestId id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

int64_t Scheduler::num_uncomputed_tokens() const {
  int64_t total = 0;
  for (const auto& [id, s] : seqs_) {
    total += static_cast<int64_t>(s->tokens.size()) - s->num_computed;
  }
  return total;
}

}  // namespace duet::runtime
