"""Find writes to storage in ``strace -f -y`` output (DESIGN §9).

A line counts as a disk write when a successful system call writes data to, creates,
renames, links, truncates or removes something that is a file on a filesystem. Pipes,
sockets, ``/dev/null``, terminals, ``anon_inode:`` descriptors and ``/proc/self``-style
paths are not storage. ``memfd_create`` is flagged too: the station has no use for it.
"""

from __future__ import annotations

import re

TRACE = "%file,%desc,write,pwrite64,writev,pwritev,pwritev2,rename,renameat2,memfd_create"
_CALL = re.compile(r"^(?:\d+\s+)?(?P<name>\w+)\((?P<args>.*)$")
_RET = re.compile(r"\)\s+=\s+(?P<ret>-?\d+)")
_FD = re.compile(r"^\s*(-?\d+)<(?P<path>[^>]*)>")
_RET_PATH = re.compile(r"=\s+\d+<(?P<path>[^>]*)>")
WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2", "sendfile", "copy_file_range",
          "ftruncate", "fallocate", "splice"}
OPENS = {"open", "openat", "openat2", "creat"}
MUTATIONS = {"rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
             "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "truncate", "mknod", "mknodat",
             "memfd_create"}
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
_NOT_STORAGE = ("pipe:", "socket:", "anon_inode:", "/dev/null", "/dev/pts/", "/dev/tty",
                "/dev/urandom", "/dev/random", "/proc/", "/sys/fs/cgroup/")


def _storage(path: str) -> bool:
    return path.startswith("/") and not path.startswith(_NOT_STORAGE)


def _failed(line: str) -> bool:
    # A call cut in two by another thread ("<unfinished ...>") counts as succeeded:
    # the scan must err on the side of finding a write.
    if line.rstrip().endswith("<unfinished ...>"):
        return False
    ret = _RET.search(line)
    return ret is None or int(ret["ret"]) < 0


def disk_writes(trace: str) -> list[str]:
    """Every line of ``trace`` that writes to storage."""
    found = []
    for line in trace.splitlines():
        m = _CALL.match(line.strip())
        if not m or _failed(line):
            continue
        name, args = m["name"], m["args"]
        if name in WRITES:
            fd = _FD.match(args)
            if fd is None or _storage(fd["path"]):  # no -y annotation: assume the worst
                found.append(line)
        elif name in OPENS:
            ret = _RET_PATH.search(line)
            if any(f in args for f in _WRITE_FLAGS) and ret and _storage(ret["path"]):
                found.append(line)
        elif name in MUTATIONS:
            found.append(line)
    return found
