// shmdict_subprocess_trampoline PARENT_PID PROGRAM ARGV0 [ARG...]: what Subprocess starts for
// SpawnOptions::kill_with_parent (subprocess.cc says why). Arms PR_SET_PDEATHSIG, then execs
// PROGRAM in place. Exit code 126: the parent died before the signal was armed.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>

int main(int argc, char** argv) {
  if (argc < 4) return 127;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Armed after the parent died: the signal will never come, so end here instead.
  if (getppid() != static_cast<pid_t>(std::atol(argv[1]))) _exit(126);
  execv(argv[2], argv + 3);
  _exit(127);
}
