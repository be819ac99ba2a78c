// The scheduler: pure bookkeeping of which tokens of which sequences run in
// the next forward step, and of the KV blocks they occupy. No threads, no
// device, no clock: the engine loop drives it step by step, and tests drive
// it the same way on any machine.
//
// A sequence is a list of known tokens (prompt, then generated ones) of
// which the first num_computed have their KV in the sequence's blocks. A
// step advances num_computed by a chunk; when a chunk reaches the last known
// token the step samples the next token, which the caller appends through
// Update. Prefill (many tokens), decode (one token) and recompute after a
// preemption (the prompt and generated tokens again) are the same operation,
// as in vLLM v1, so one loop serves every role.
//
// Blocks: a sequence is admitted only when blocks for all its known tokens
// are free (all-or-nothing, so two half-admitted prompts can never deadlock
// each other); it then grows one block at a time as it generates. When a
// running sequence needs a block and none is free, the most recently
// admitted running sequence is preempted by recompute: its blocks are freed
// and it goes back to the front of the waiting queue with num_computed = 0.
// Blocks can also be held outside any sequence (Reserve), for KV that a
// peer writes before the sequence exists (the decode node's reservations).
#ifndef DUET_RUNTIME_SCHEDULER_H_
#define DUET_RUNTIME_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/strong_id.h"
#include "model/kv_cache.h"

namespace duet::runtime {

// What a step's token budget goes to first (--scheduling).
enum class SchedulingPolicy {
  // SARATHI / vLLM chunked prefill: one token for every running decode
  // first, then prefill chunks (running ones, then admissions) fill the
  // rest, so a long prompt never stalls the decodes beside it.
  kPiggyback,
  // vLLM v0's default order: while any prompt has tokens to prefill (or
  // can be admitted), steps run prefill chunks only and the decodes wait;
  // decode steps run when no prefill work is left. Better TTFT under
  // bursts, worse TPOT: kept for comparison.
  kPrefillFirst,
};
// "piggyback" / "prefill-first"; INVALID_ARGUMENT naming both otherwise.
absl::StatusOr<SchedulingPolicy> ParseSchedulingPolicy(absl::string_view name);
const char* SchedulingPolicyName(SchedulingPolicy policy);

struct SchedulerOptions {
  SchedulingPolicy policy = SchedulingPolicy::kPiggyback;
  int32_t block_size = 16;
  int32_t num_blocks = 0;
  // Tokens of all chunks of one step (--max-num-batched-tokens).
  int32_t max_num_batched_tokens = 2048;
  // Sequences in one step (--max-num-seqs).
  int32_t max_num_seqs = 64;
  // Prefix caching (--enable-prefix-caching): full blocks are registered
  // in the pool by content once computed, and an admitted sequence takes
  // the cached blocks of its longest cached prefix (never its last token,
  // which must run to be sampled) and computes only the rest.
  bool enable_prefix_caching = false;
};

// One sequence's share of a step: tokens [start, start + len) of it.
struct ScheduledChunk {
  RequestId id;
  int32_t start = 0;
  int32_t len = 0;
  // The chunk ends at the sequence's last known token: the step draws the
  // next one.
  bool sample = false;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  // Running sequences preempted while planning (blocks freed, requeued).
  std::vector<RequestId> preempted;
  bool empty() const { return chunks.empty(); }
};

// What the scheduler holds of one sequence (read-only to callers).
struct Sequence {
  RequestId id;
  std::vector<int32_t> tokens;
  int32_t num_prompt_tokens = 0;
  int32_t num_computed = 0;
  std::vector<BlockId> blocks;
  bool running = false;
  int32_t num_preemptions = 0;
  // Prefix caching: the cache uid of blocks[i] for the leading blocks that
  // are registered (taken from the cache or registered once computed).
  std::vector<uint64_t> block_uids;
  // Tokens taken from the prefix cache at the last admission.
  int32_t num_cached_tokens = 0;
  // The index of the next token to draw among the generated ones (its
  // sampler step): tokens.size() - num_prompt_tokens.
  int32_t num_generated() const {
    return static_cast<int32_t>(tokens.size()) - num_prompt_tokens;
  }
};

class Scheduler {
 public:
  // InvalidArgument unless every option is > 0.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      const SchedulerOptions& options);

  const SchedulerOptions& options() const { return options_; }

  // Takes `n` blocks outside any sequence. RESOURCE_EXHAUSTED (nothing
  // taken) when fewer are free, or when taking them would leave fewer than
  // the waiting sequences still need: preempted work is owed its blocks
  // before new reservations get any, or a stream of reservations could
  // starve it forever.
  absl::StatusOr<std::vector<BlockId>> Reserve(int32_t n);
  // Reserve for a prompt whose KV arrives from elsewhere (a decode node's
  // reservation), reusing the prefix cache: the leading full blocks of
  // `prompt` that are cached, at most `max_cached` (a reference taken on
  // each, counted as prefix-cache hits), then fresh blocks up to `n` in
  // all. Without prefix caching, or for an empty prompt, just Reserve(n).
  // On error nothing is taken.
  struct PromptBlocks {
    std::vector<BlockId> blocks;  // the cached ones first
    // The cache uid of each leading cached block (blocks[i] for i below
    // cached_uids.size()); hand them to Add with the blocks.
    std::vector<uint64_t> cached_uids;
  };
  absl::StatusOr<PromptBlocks> ReservePrompt(std::span<const int32_t> prompt,
                                             int32_t n, int32_t max_cached);
  // Returns blocks taken by Reserve or ReservePrompt and never handed to Add
  // (a cached block just loses the reference).
  absl::Status Unreserve(std::span<const BlockId> blocks);

  // Queues a sequence (FCFS, behind the waiting ones). `tokens` are its
  // known tokens, the first `num_prompt_tokens` of them the prompt; the
  // first `num_computed` already have their KV in `blocks` (from Reserve,
  // owned by the sequence from now on). The first `cached_uids.size()` of
  // them are prefix-cache blocks from ReservePrompt (shared with other
  // sequences; cached_uids their uids). It will hold KV for at most
  // `max_total_tokens` tokens (0: just its known ones). InvalidArgument for
  // an empty sequence, num_computed outside [0, tokens.size()), too few
  // blocks for num_computed tokens, blocks that are not reserved ones held
  // once, or a sequence that could outgrow the whole pool (it would end up
  // preempting itself forever, with the waiting queue blocked behind it);
  // AlreadyExists for a known id.
  absl::Status Add(RequestId id, std::vector<int32_t> tokens,
                   int32_t num_prompt_tokens, int32_t num_computed = 0,
                   std::vector<BlockId> blocks = {},
                   int64_t max_total_tokens = 0,
                   std::vector<uint64_t> cached_uids = {});

  // Plans the next step. Piggyback: one token of every running decode
  // (growing or preempting as needed), then the running prefills' chunks,
  // then waiting ones, FCFS, while the token budget, max_num_seqs and free
  // blocks allow. Prefill-first: the running prefills and admissions only,
  // and the decodes only in a step where those plan nothing. A chunk that
  // does not reach a sequence's last known token is not sampled. A waiting
  // sequence that needs blocks that are not free stops admission of others that
  // need blocks (nothing overtakes it for blocks); waiting sequences that
  // already hold all their blocks (reserved KV) may still join, since they
  // take nothing from it, and running is how they give their blocks back.
  StepPlan Schedule();

  // Records that `plan` ran: each chunk's tokens are computed, and
  // sampled[i] (one per chunk with sample set, in order) is appended to its
  // sequence. A sequence removed since Schedule is skipped.
  absl::Status Update(const StepPlan& plan, std::span<const int32_t> sampled);

  // Drops a sequence in any state and frees its blocks. False if unknown.
  bool Remove(RequestId id);
  // Drops a sequence in any state but keeps its blocks taken, as if
  // reserved: the caller returns them with Unreserve (a KV transfer may
  // still read them). Empty if unknown.
  std::vector<BlockId> Detach(RequestId id);

  // Null when unknown. Valid until the next non-const call.
  const Sequence* Find(RequestId id) const;

  int32_t num_free_blocks() const { return pool_.num_free(); }
  int32_t num_total_blocks() const { return pool_.num_blocks(); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  // Known tokens not yet computed, over all sequences (queued prefill work).
  int64_t num_uncomputed_tokens() const;
  int64_t num_preemptions() const { return num_preemptions_; }
  // Prefix caching: prompt tokens looked up at admission and found cached
  // (vLLM's prefix-cache queries and hits, in tokens), blocks cached now
  // and evicted so far.
  int64_t prefix_cache_queries() const { return prefix_queries_; }
  int64_t prefix_cache_hits() const { return prefix_hits_; }
  int32_t num_cached_blocks() const { return pool_.num_cached(); }
  int64_t num_cache_evictions() const { return pool_.num_evictions(); }
  // Blocks the waiting sequences lack to hold their known tokens.
  int64_t num_blocks_owed() const;

 private:
  explicit Scheduler(const SchedulerOptions& options);
  // Blocks `s` lacks to hold `num_tokens` tokens.
  int32_t MissingBlocks(const Sequence& s, int64_t num_tokens) const;
  // Plans running sequence running_[i], preempting from the back for its
  // blocks when `may_preempt`. False when planning must stop: the sequence
  // preempted itself for want of blocks.
  bool PlanRunning(size_t i, bool may_preempt, int32_t& budget, StepPlan& plan);
  // One token of every running decode; false when planning must stop.
  bool PlanDecodes(int32_t& budget, StepPlan& plan);
  // The running prefills' chunks (they need no new blocks).
  void PlanPrefills(int32_t& budget, StepPlan& plan);
  // Admits waiting sequences FCFS into what is left.
  void Admit(int32_t& budget, StepPlan& plan);
  // The sequence running_[i] has exactly its last known token to compute.
  bool IsDecode(size_t i) const;
  void Preempt(Sequence& s);
  void FreeBlocks(Sequence& s);

  const SchedulerOptions options_;
  model::BlockPool pool_;
  absl::flat_hash_map<RequestId, std::unique_ptr<Sequence>> seqs_;
  std::vector<RequestId> running_;  // admission order
  std::deque<RequestId> waiting_;
  int64_t num_preemptions_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
  // Prefix caching: takes the cached blocks of `s`'s longest cached prefix
  // (s holds no blocks); registers its newly full computed blocks.
  // Appends to `blocks` / `uids` the cached blocks holding the leading full
  // blocks of `tokens`, at most `most` (a reference taken on each).
  void AcquireLeading(std::span<const int32_t> tokens, int32_t most,
                      std::vector<BlockId>& blocks,
                      std::vector<uint64_t>& uids);
  void AcquirePrefix(Sequence& s);
  void RegisterFullBlocks(Sequence& s);
};

}  // namespace duet::runtime

#endif  // DUET_RUNTIME_SCHEDULER_H_
