"""Zero buffers for real, and keep them out of core dumps: the helpers every layer uses.

:func:`zero` overwrites a buffer in place with ``memset`` (slice assignment would
allocate a zero-filled copy first), :func:`dont_dump` adds ``MADV_DONTDUMP`` to its
pages, and :class:`Buffers` is where a sealer gets the buffers it writes ciphertext
into (the station's vault arena, or the heap for tests, tools and the relay side).
Process hardening (mlockall, non-dumpable) and the arena are the station's, in
``clinicam.firmware.capture.memory``.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any, Protocol

MADV_DONTDUMP = 16
PAGE = mmap.PAGESIZE

_libc: Any = None


def libc() -> Any:
    """libc's symbols, through the interpreter's own (dlopen(NULL)), loaded on first use.

    Not ``ctypes.util.find_library``: that runs ``ldconfig -p`` in a subprocess.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def zero(buf: Any) -> None:
    """Overwrite a writable buffer (``bytearray``, ``mmap``, writable ``memoryview``) with zeros.

    ``memset`` through ctypes is a real call the compiler cannot elide, and it touches
    the buffer in place (slice assignment would allocate a zero-filled copy first).
    """
    view = memoryview(buf)
    try:
        if view.readonly:
            raise TypeError("only writable buffers can be zeroed; immutable bytes cannot")
        if view.nbytes:
            window = (ctypes.c_char * view.nbytes).from_buffer(view)
            ctypes.memset(window, 0, view.nbytes)
            del window
    finally:
        view.release()


def is_zero(buf: Any) -> bool:
    """True when every byte of ``buf`` is zero (for tests and selftest)."""
    view = memoryview(buf).cast("B")
    try:
        return view.nbytes == 0 or (not any(view[:1]) and view[:-1] == view[1:])
    finally:
        view.release()


def dont_dump(buf: Any) -> bool:
    """Mark the whole pages inside a writable buffer ``MADV_DONTDUMP``; False if none or refused.

    Only pages entirely inside the buffer are marked, so no neighbouring object is
    affected. A buffer smaller than two pages may hold no whole page: that is fine,
    the process as a whole is non-dumpable anyway (this is a second layer).
    """
    if isinstance(buf, mmap.mmap):
        try:
            buf.madvise(mmap.MADV_DONTDUMP)
        except (OSError, AttributeError, ValueError):
            return False
        return True
    view = memoryview(buf)
    try:
        window = (ctypes.c_char * view.nbytes).from_buffer(view)
        start = ctypes.addressof(window)
        del window
        first = -(-start // PAGE) * PAGE
        last = (start + view.nbytes) // PAGE * PAGE
        if last <= first:
            return False
        return libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first),
                            MADV_DONTDUMP) == 0
    finally:
        view.release()


class Buffers(Protocol):
    """Where the sealer gets the buffer a capture's ciphertext parts are written into."""

    def allocate(self, nbytes: int) -> memoryview: ...
    def release(self, buf: memoryview) -> None: ...


class HeapBuffers:
    """Ciphertext buffers from the Python heap: for tests, tools and the relay side."""

    def allocate(self, nbytes: int) -> memoryview:
        return memoryview(bytearray(nbytes))

    def release(self, buf: memoryview) -> None:
        zero(buf)
