// Test helpers shared by the model tests: synthetic checkpoints in a temp
// directory and a tiny step-by-step runner over Transformer.
#ifndef DUET_TESTS_TESTING_TEST_MODEL_H_
#define DUET_TESTS_TESTING_TEST_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "runtime/model_runner.h"

namespace duet::testing {

// Writes the synthetic `preset` checkpoint (seed 0) once per process into a
// temp directory and returns its path.
const std::string& SyntheticModelDir(const std::string& preset);

// Loads `dir` on the CPU backend; fails the test on error.
std::unique_ptr<model::Transformer> LoadCpuModel(const std::string& dir);

// A model runner over `dir` on the CPU backend with a pool of `num_blocks`
// blocks of `block_size`; fails the test on error.
std::unique_ptr<runtime::ModelRunner> MakeCpuRunner(const std::string& dir,
                                                    int32_t num_blocks,
                                                    int32_t block_size = 16);

// FNV-1a 64 of a file's bytes, as scripts/make_golden.py computes it.
std::string Fnv1a64File(const std::string& path);

// Deterministic prompt ids, same LCG as scripts/make_golden.py.
std::vector<int32_t> LcgPrompt(int32_t length, int32_t vocab_limit);

// Runs a whole sequence through `model` in prefill chunks of `chunk` tokens
// on the given physical `blocks` (block size `block_size`) and returns the
// logits of every position, [len, vocab] row-major.
std::vector<float> PrefillAllLogits(model::Transformer& model,
                                    const model::KvCacheStorage& cache,
                                    const std::vector<int32_t>& tokens,
                                    int32_t chunk,
                                    const std::vector<BlockId>& blocks,
                                    int32_t block_size);

}  // namespace duet::testing

#endif  // DUET_TESTS_TESTING_TEST_MODEL_H_
