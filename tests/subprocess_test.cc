// Subprocess (tests/support/subprocess.h), the launcher every test and benchmark uses: what a
// caller observes of its pipes, environment, deadlines, process groups and parent-death signal.
#include "subprocess.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace shmdict::internal {
namespace {

std::unique_ptr<Subprocess> StartShell(const std::string& script, SpawnOptions options = {}) {
  options.path = "/bin/sh";
  options.argv = {"sh", "-c", script};
  options.pipe_stdout = true;
  std::string error;
  std::unique_ptr<Subprocess> p = Subprocess::Start(options, &error);
  EXPECT_NE(p, nullptr) << error;
  return p;
}

// The state letter of /proc/PID/stat ('Z' for a zombie), or 0 once the process is gone.
char ProcessState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  const size_t paren = line.rfind(')');
  return paren + 2 < line.size() ? line[paren + 2] : 0;
}

// True once `pid` is dead (gone, or a zombie nobody reaped yet), false at the deadline.
bool AwaitDead(pid_t pid, Deadline deadline) {
  for (;;) {
    const char state = ProcessState(pid);
    if (state == 0 || state == 'Z') return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::yield();
  }
}

TEST(SubprocessTest, ReadsStdoutLineByLineAndReportsTheExitCode) {
  auto p = StartShell("echo one; echo two; printf tail; exit 3");
  ASSERT_NE(p, nullptr);
  std::string line;
  ASSERT_EQ(p->ReadLine(&line, DeadlineIn(std::chrono::seconds(30))), LineStatus::kLine);
  EXPECT_EQ(line, "one");
  const ExitInfo exit = p->Wait(DeadlineIn(std::chrono::seconds(30)));
  EXPECT_TRUE(exit.exited && exit.exit_code == 3) << exit.ToString();
  EXPECT_EQ(p->TakeLines(), (std::vector<std::string>{"two", "tail"}));
  EXPECT_EQ(p->ReadLine(&line, DeadlineIn(std::chrono::seconds(1))), LineStatus::kEof);
}

TEST(SubprocessTest, StdinLinesReachTheChild) {
  SpawnOptions options;
  options.pipe_stdin = true;
  auto p = StartShell("read a; read b; echo \"$b $a\"", options);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->WriteLine("first"));
  EXPECT_TRUE(p->WriteLine("second"));
  std::string line;
  ASSERT_EQ(p->ReadLine(&line, DeadlineIn(std::chrono::seconds(30))), LineStatus::kLine);
  EXPECT_EQ(line, "second first");
  EXPECT_TRUE(p->Wait(DeadlineIn(std::chrono::seconds(30))).Succeeded());
}

TEST(SubprocessTest, EnvironmentAdditionsAddAndReplaceVariables) {
  setenv("SHMDICT_SUBPROCESS_TEST_OLD", "old", 1);
  SpawnOptions options;
  options.env = {"SHMDICT_SUBPROCESS_TEST_OLD=replaced", "SHMDICT_SUBPROCESS_TEST_NEW=new"};
  auto p = StartShell("echo $SHMDICT_SUBPROCESS_TEST_OLD $SHMDICT_SUBPROCESS_TEST_NEW", options);
  unsetenv("SHMDICT_SUBPROCESS_TEST_OLD");
  ASSERT_NE(p, nullptr);
  std::string line;
  ASSERT_EQ(p->ReadLine(&line, DeadlineIn(std::chrono::seconds(30))), LineStatus::kLine);
  EXPECT_EQ(line, "replaced new");
}

TEST(SubprocessTest, WaitSigkillsAChildStillRunningAtTheDeadline) {
  auto p = StartShell("exec sleep 600");
  ASSERT_NE(p, nullptr);
  const ExitInfo exit = p->Wait(DeadlineIn(std::chrono::milliseconds(100)));
  EXPECT_TRUE(exit.timed_out);
  EXPECT_EQ(exit.signal, SIGKILL) << exit.ToString();
}

TEST(SubprocessTest, KillEndsTheChildsWholeProcessGroup) {
  SpawnOptions options;
  options.new_process_group = true;
  auto p = StartShell("sleep 600 & echo $!; wait", options);
  ASSERT_NE(p, nullptr);
  std::string line;
  ASSERT_EQ(p->ReadLine(&line, DeadlineIn(std::chrono::seconds(30))), LineStatus::kLine);
  const pid_t grandchild = std::stoi(line);
  EXPECT_EQ(getpgid(grandchild), p->pid());
  p->Kill();
  EXPECT_TRUE(p->reaped());
  EXPECT_TRUE(AwaitDead(grandchild, DeadlineIn(std::chrono::seconds(30))));
}

TEST(SubprocessTest, KillWithParentEndsTheChildWhenItsStartingThreadEnds) {
  // PR_SET_PDEATHSIG follows the thread that started the child, so a thread that ends stands in
  // for a parent killed by SIGKILL, and the child stays ours to reap.
  std::unique_ptr<Subprocess> p;
  std::thread starter([&] {
    SpawnOptions options;
    options.path = "/bin/sleep";
    options.argv = {"sleep", "600"};
    options.kill_with_parent = true;
    std::string error;
    p = Subprocess::Start(options, &error);
    ASSERT_NE(p, nullptr) << error;
    // Until the trampoline has exec'd sleep, the signal may not be armed yet.
    const std::string exe = "/proc/" + std::to_string(p->pid()) + "/exe";
    const Deadline deadline = DeadlineIn(std::chrono::seconds(30));
    char target[4096];
    for (;;) {
      const ssize_t n = readlink(exe.c_str(), target, sizeof target);
      if (n > 0 && std::string(target, static_cast<size_t>(n)).ends_with("/sleep")) break;
      ASSERT_LT(Clock::now(), deadline) << "the trampoline never exec'd sleep";
      std::this_thread::yield();
    }
  });
  starter.join();
  ASSERT_NE(p, nullptr);
  const ExitInfo exit = p->Wait(DeadlineIn(std::chrono::seconds(30)));
  EXPECT_TRUE(exit.KilledBy(SIGKILL)) << exit.ToString();
}

TEST(SubprocessTest, StartReportsAProgramThatCannotRun) {
  for (const bool kill_with_parent : {false, true}) {
    SpawnOptions options;
    options.path = "/nonexistent/program";
    options.argv = {"program"};
    options.kill_with_parent = kill_with_parent;
    std::string error;
    EXPECT_EQ(Subprocess::Start(options, &error), nullptr);
    EXPECT_NE(error.find("/nonexistent/program"), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace shmdict::internal
