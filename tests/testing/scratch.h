// One scratch folder per test process, removed when the process exits.
#ifndef DUET_TESTS_TESTING_SCRATCH_H_
#define DUET_TESTS_TESTING_SCRATCH_H_

#include <string>

namespace duet::testing {

// `$TEST_TMPDIR`-or-`/tmp`/duet_test_<pid>, created on first use. Every file
// a test writes (checkpoints, cluster logs, certificates, result files) goes
// under it, because ctest starts one process per test and CI machines have
// little disk: hundreds of processes each leaving a checkpoint behind once
// filled one. At exit the folder is removed; when a test of the process
// failed, only the `models` subfolder (the large part) is removed and the
// logs stay for whoever reads the failure.
const std::string& ScratchDir();

// ScratchDir()/models: synthetic checkpoints, removed at exit in any case.
const std::string& ScratchModelsDir();

}  // namespace duet::testing

#endif  // DUET_TESTS_TESTING_SCRATCH_H_
