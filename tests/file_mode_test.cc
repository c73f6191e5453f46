// A dict's segments carry the file mode its creator asked for (Options::mode, 0600 by default), and
// the kernel enforces it against other users. Root ignores file modes, and CI runs as root: so the
// test forks, and each child becomes an unprivileged user (setgid/setuid) before it creates or
// attaches. Run as another user, the parts that need a second uid cannot be set up; the test then
// checks what its own uid can (the mode on the file, the owner getting in) and says what it left
// out.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "dict_test_base.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"

namespace shmdict::testing {
namespace {

struct User {
  uid_t uid;
  gid_t gid;
};
// Unprivileged identities; they need no entry in /etc/passwd. nobody and a second user of its
// group, and a third user in a group of its own.
constexpr User kCreator{65534, 65534};
constexpr User kSameGroup{65533, 65534};
constexpr User kOtherGroup{65532, 65532};

// Exit codes of a child, besides a StatusCode's number (0..16).
constexpr int kCouldNotBecomeTheUser = 100;
constexpr int kWrongValue = 101;

bool IsRoot() { return geteuid() == 0; }

// Runs `body` in a forked child, as `user` when this process is root (else as this process's own
// user), and returns the child's exit code (-1 if it did not exit by itself). The child reports
// through its exit code only: a gtest assertion there would not reach the parent.
int RunAs(std::optional<User> user, const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (user && IsRoot()) {
      // Groups first: once the uid is dropped, changing them is no longer allowed.
      if (setgroups(0, nullptr) != 0 || setgid(user->gid) != 0 || setuid(user->uid) != 0) {
        _exit(kCouldNotBecomeTheUser);
      }
    }
    _exit(body());
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

int CodeOf(const Status& status) { return static_cast<int>(status.code()); }
constexpr int kOk = static_cast<int>(StatusCode::kOk);
constexpr int kPermissionDenied = static_cast<int>(StatusCode::kPermissionDenied);

class FileModeTest : public DictTestBase {
 protected:
  // Creates the dict with `mode` (nullopt: the default) as kCreator (root) or as this user, and
  // leaves it behind with "k" = 1 for the other users to find.
  void CreateAsTheCreator(std::optional<mode_t> mode) {
    const int created = RunAs(kCreator, [&] {
      Options options = CreateOptions(name_);
      options.auto_unlink = false;  // outlives this child; DictTestBase unlinks it
      if (mode) options.mode = *mode;
      Result<Dict> dict = Dict::Open(options);
      if (!dict.ok()) return CodeOf(dict.status());
      return CodeOf(dict->Set("k", Value::Int(1)).status());
    });
    ASSERT_EQ(created, kOk) << "creating " << name_ << " as uid " << kCreator.uid;
  }

  // stat() of the dict's main segment.
  struct stat Stat() {
    struct stat st {};
    EXPECT_EQ(stat(ShmPath(name_).c_str(), &st), 0) << ShmPath(name_);
    return st;
  }

  // Attaches as `user`, then writes "k" = 2 and reads it back: the dict's status code.
  int AttachAndWriteAs(User user) {
    return RunAs(user, [&] {
      Result<Dict> dict = Dict::Open(AttachOptions(name_));
      if (!dict.ok()) return CodeOf(dict.status());
      if (Status set = dict->Set("k", Value::Int(2)).status(); !set.ok()) return CodeOf(set);
      Result<std::optional<Value>> got = dict->Get("k");
      return got.ok() && *got == std::optional<Value>(Value::Int(2)) ? kOk : kWrongValue;
    });
  }

  // Opens the segment file read-only as `user`: 0, or the errno.
  int OpenForReadingAs(User user) {
    return RunAs(user, [&] {
      const int fd = open(ShmPath(name_).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return errno;
      close(fd);
      return 0;
    });
  }

  // The checks that need a second uid, which only root can take on.
  static bool CanActAsOtherUsers() {
    if (!IsRoot()) {
      std::printf("[ INFO ] not root: the checks as other uids are left out\n");
    }
    return IsRoot();
  }
};

TEST_F(FileModeTest, ADefaultModeSegmentIsOpenToItsOwnerAlone) {
  CreateAsTheCreator(std::nullopt);
  const struct stat st = Stat();
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, IsRoot() ? kCreator.uid : geteuid());
  EXPECT_EQ(AttachAndWriteAs(kCreator), kOk) << "the owner attaches and writes";
  if (!CanActAsOtherUsers()) return;
  EXPECT_EQ(AttachAndWriteAs(kSameGroup), kPermissionDenied) << "another uid of the group";
  EXPECT_EQ(AttachAndWriteAs(kOtherGroup), kPermissionDenied) << "another uid";
  EXPECT_EQ(OpenForReadingAs(kOtherGroup), EACCES) << "not even the bytes are readable";
}

TEST_F(FileModeTest, AGroupModeLetsTheGroupInAndKeepsOthersOut) {
  CreateAsTheCreator(0660);
  EXPECT_EQ(Stat().st_mode & 07777, 0660u);
  EXPECT_EQ(AttachAndWriteAs(kCreator), kOk);
  if (!CanActAsOtherUsers()) return;
  EXPECT_EQ(Stat().st_gid, kCreator.gid);
  EXPECT_EQ(AttachAndWriteAs(kSameGroup), kOk) << "a member of the group attaches and writes";
  EXPECT_EQ(AttachAndWriteAs(kOtherGroup), kPermissionDenied);
  EXPECT_EQ(OpenForReadingAs(kOtherGroup), EACCES);
}

// Attaching maps the segment for writing (every handle takes the writer lock in it), so 0644 lets
// other users read the bytes but not attach.
TEST_F(FileModeTest, AWorldReadableModeLetsOthersReadTheBytesButNotAttach) {
  CreateAsTheCreator(0644);
  EXPECT_EQ(Stat().st_mode & 07777, 0644u);
  EXPECT_EQ(AttachAndWriteAs(kCreator), kOk);
  if (!CanActAsOtherUsers()) return;
  EXPECT_EQ(OpenForReadingAs(kOtherGroup), 0);
  EXPECT_EQ(AttachAndWriteAs(kOtherGroup), kPermissionDenied);
  // What a bridge run by that user checks before it lists the dict (ListDicts): readable is not
  // enough.
  EXPECT_EQ(RunAs(kOtherGroup, [&] { return Dict::MayAttach(name_) ? 1 : 0; }), 0);
  EXPECT_EQ(RunAs(kCreator, [&] { return Dict::MayAttach(name_) ? 1 : 0; }), 1);
}

}  // namespace
}  // namespace shmdict::testing
