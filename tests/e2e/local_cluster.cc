#include "tests/e2e/local_cluster.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch.h"

namespace duet::testing {

absl::StatusOr<std::unique_ptr<Process>> Process::Start(
    const std::vector<std::string>& argv, const std::string& log_path,
    const std::string& ready_marker, absl::Duration timeout) {
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(out[0]);
    // The test runner may block signals; the child must not inherit that.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = pid;
  p->stdout_fd_ = out[0];
  const absl::Time deadline = absl::Now() + timeout;
  std::string buffer;
  while (true) {
    const size_t nl = buffer.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (line.find(ready_marker) != std::string::npos) {
        p->ready_line_ = line;
        return p;
      }
      continue;
    }
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          argv[0], " did not print its start-up line; see ", log_path));
    }
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(p->stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      return absl::InternalError(absl::StrCat(
          argv[0], " exited before its start-up line; see ", log_path));
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

std::string Process::address() const {
  const size_t at = ready_line_.find(" on ");
  if (at == std::string::npos) return "";
  const size_t start = at + 4;
  size_t end = start;
  while (end < ready_line_.size() && ready_line_[end] != ' ' &&
         ready_line_[end] != ',' && ready_line_[end] != ':') {
    ++end;
  }
  // host, then ':' and the port digits.
  if (end < ready_line_.size() && ready_line_[end] == ':') {
    ++end;
    while (end < ready_line_.size() && isdigit(ready_line_[end])) ++end;
  }
  return ready_line_.substr(start, end - start);
}

void Process::Kill(int signal) {
  if (!exited_) kill(pid_, signal);
}

int Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      return status;
    }
    if (absl::Now() > deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

Process::~Process() {
  if (!exited_) {
    Kill(SIGTERM);
    if (Wait(absl::Seconds(5)) == -1) {
      Kill(SIGKILL);
      Wait(absl::Seconds(5));
    }
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

const std::string& CertDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(
        absl::StrCat(::duet::testing::ScratchDir(), "/duet_certs_", getpid()));
    // The source tree's script; from a bundle on another machine, the
    // working directory's (tests run from the repository root there).
    std::string script =
        std::string(DUET_SOURCE_DIR) + "/scripts/make_certs.sh";
    if (access(script.c_str(), X_OK) != 0) script = "scripts/make_certs.sh";
    const std::string cmd =
        absl::StrCat(script, " ", *d, " node >/dev/null 2>&1");
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "could not make test certificates: " << cmd;
    }
    return d;
  }();
  return *dir;
}

std::vector<std::string> TlsArgs() {
  return {"--tls-cert", CertDir() + "/node.pem",
          "--tls-key",  CertDir() + "/node-key.pem",
          "--tls-ca",   CertDir() + "/ca.pem"};
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::shared_ptr<grpc::ChannelCredentials> TestCredentials(bool member) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadWholeFile(CertDir() + "/ca.pem");
  if (member) {
    o.pem_cert_chain = ReadWholeFile(CertDir() + "/node.pem");
    o.pem_private_key = ReadWholeFile(CertDir() + "/node-key.pem");
  }
  return grpc::SslCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> LocalCluster::MemberCredentials()
    const {
  if (insecure_) return grpc::InsecureChannelCredentials();
  return TestCredentials(/*member=*/true);
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const ClusterOptions& o) {
  auto c = std::unique_ptr<LocalCluster>(new LocalCluster());
  c->insecure_ = o.insecure;
  const std::vector<std::string> security =
      o.insecure ? std::vector<std::string>{"--insecure"} : TlsArgs();
  static int counter = 0;
  c->log_dir_ = absl::StrCat(::duet::testing::ScratchDir(), "/duet_cluster_",
                             getpid(), "_", counter++);
  mkdir(c->log_dir_.c_str(), 0755);
  // GPU nodes load multi-GB checkpoints and profile a step first.
  const absl::Duration kStart = absl::Seconds(120);
  // DUET_BIN_DIR runs the binaries of a bundle (scripts/bundle.sh) instead
  // of the build tree's.
  const char* bin_dir = std::getenv("DUET_BIN_DIR");
  auto bin = [&](const char* built, const char* name) {
    return bin_dir != nullptr ? absl::StrCat(bin_dir, "/", name)
                              : std::string(built);
  };
  std::vector<std::string> router = {bin(DUET_ROUTER_BIN, "duet-router"),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--heartbeat-interval-ms",
                                     "100",
                                     "--node-timeout-ms",
                                     "1000"};
  router.insert(router.end(), security.begin(), security.end());
  router.insert(router.end(), o.router_args.begin(), o.router_args.end());
  auto r =
      Process::Start(router, c->log_dir_ + "/router.log", "serving", kStart);
  if (!r.ok()) return r.status();
  c->router_ = std::move(*r);
  c->router_argv_ = router;
  c->router_address_ = c->router_->address();
  // Prefill nodes, then decode nodes: the same command but for the binary,
  // the role's own flags and where it goes.
  auto start_nodes =
      [&](int n, const char* built, const char* name, const char* log,
          const std::vector<std::string>& extra,
          std::vector<std::unique_ptr<Process>>& out) -> absl::Status {
    const std::vector<std::string>& env =
        &out == &c->decode_ ? o.decode_env : o.prefill_env;
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> args;
      if (!env.empty()) {
        args.push_back("/usr/bin/env");
        args.insert(args.end(), env.begin(), env.end());
      }
      // The CPU backend unless the test's own flags say otherwise (they
      // come later, and the last flag wins): the tests compare against the
      // CPU engine, also on a machine with a GPU.
      args.insert(args.end(), {bin(built, name), "--model", o.model_dir,
                               "--router", c->router_address_, "--rank",
                               std::to_string(i), "--backend", "cpu"});
      args.insert(args.end(), security.begin(), security.end());
      args.insert(args.end(), extra.begin(), extra.end());
      auto p =
          Process::Start(args, absl::StrCat(c->log_dir_, "/", log, i, ".log"),
                         "serving", kStart);
      if (!p.ok()) return p.status();
      (&out == &c->decode_ ? c->decode_argv_ : c->prefill_argv_)
          .push_back(args);
      out.push_back(std::move(*p));
    }
    return absl::OkStatus();
  };
  if (absl::Status s =
          start_nodes(o.num_prefill, DUET_PREFILL_BIN, "duet-prefill",
                      "prefill", o.prefill_args, c->prefill_);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = start_nodes(o.num_decode, DUET_DECODE_BIN, "duet-decode",
                                   "decode", o.decode_args, c->decode_);
      !s.ok()) {
    return s;
  }
  std::vector<std::string> colocated = o.decode_args;
  colocated.insert(colocated.end(), {"--role", "colocated"});
  colocated.insert(colocated.end(), o.colocated_args.begin(),
                   o.colocated_args.end());
  if (absl::Status s =
          start_nodes(o.num_colocated, DUET_DECODE_BIN, "duet-decode",
                      "colocated", colocated, c->decode_);
      !s.ok()) {
    return s;
  }
  c->client_ = v1::Duet::NewStub(grpc::CreateChannel(
      c->router_address_, o.insecure ? grpc::InsecureChannelCredentials()
                                     : TestCredentials(/*member=*/false)));
  // Serving once every node has registered.
  const absl::Time deadline = absl::Now() + kStart;
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::HealthResponse health;
    const grpc::Status s =
        c->client_->Health(&ctx, v1::HealthRequest(), &health);
    if (s.ok() &&
        static_cast<int>(health.num_prefill_nodes()) == o.num_prefill &&
        static_cast<int>(health.num_decode_nodes()) == o.num_decode &&
        static_cast<int>(health.num_colocated_nodes()) == o.num_colocated) {
      return c;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("nodes did not all register; logs in ", c->log_dir_));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::Status LocalCluster::Restart(std::unique_ptr<Process>& process,
                                   std::vector<std::string> argv,
                                   const std::string& log,
                                   absl::Duration down) {
  const std::string address = process->address();
  process->Kill(SIGKILL);
  process->Wait(absl::Seconds(10));
  absl::SleepFor(down);
  argv.insert(argv.end(), {"--listen", address});  // the last one wins
  auto p = Process::Start(argv, log, "serving", absl::Seconds(120));
  if (!p.ok()) return p.status();
  process = std::move(*p);
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartDecode(int i, absl::Duration down) {
  return Restart(decode_[i], decode_argv_[i],
                 absl::StrCat(log_dir_, "/decode", i, "_restarted.log"), down);
}

absl::Status LocalCluster::RestartPrefill(int i, absl::Duration down) {
  return Restart(prefill_[i], prefill_argv_[i],
                 absl::StrCat(log_dir_, "/prefill", i, "_restarted.log"), down);
}

absl::Status LocalCluster::RestartRouter(absl::Duration down) {
  return Restart(router_, router_argv_,
                 absl::StrCat(log_dir_, "/router_restarted.log"), down);
}

absl::StatusOr<v1::StatsResponse> LocalCluster::Stats(const Process& node) {
  auto stub = v1::Node::NewStub(
      grpc::CreateChannel(node.address(), MemberCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  v1::StatsResponse reply;
  const grpc::Status s = stub->Stats(&ctx, v1::StatsRequest(), &reply);
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("Stats on ", node.address(), ": ", s.error_message()));
  }
  return reply;
}

absl::Status LocalCluster::WaitAllBlocksFree(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (true) {
    bool all_free = true;
    std::vector<Process*> nodes;
    for (auto& p : prefill_) nodes.push_back(p.get());
    for (auto& d : decode_) nodes.push_back(d.get());
    for (Process* node : nodes) {
      auto stats = Stats(*node);
      if (!stats.ok()) return stats.status();
      if (stats->load().free_kv_blocks() != stats->load().total_kv_blocks()) {
        all_free = false;
        last = absl::StrCat(node->address(), " has ",
                            stats->load().free_kv_blocks(), " of ",
                            stats->load().total_kv_blocks(), " blocks free");
      }
    }
    if (all_free) return absl::OkStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("KV blocks leaked: ", last));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace duet::testing
