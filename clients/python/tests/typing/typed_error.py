# Must NOT type-check (tests/test_typing.py): each line marked "error" misuses the stubs' types,
# so a stub that degrades to Any makes the test fail.
import shmdict
from shmdict.ultradict import UltraDict

d = shmdict.Dict()
name: int = d.name  # error: name is a str
n: str = d.increment("k")  # error: increment returns an int
d.lock.acquire(timeout="soon")  # error: timeout is a float
shmdict.connect("unix:/run/bridge.sock")  # error: connect needs the dict's name
u = UltraDict()
pid: str = u.lock.get_remote_pid()  # error: a pid is an int
u.lock.steal(from_pid="1")  # error: from_pid is an int
u.fromkeys(3)  # error: fromkeys takes an iterable
