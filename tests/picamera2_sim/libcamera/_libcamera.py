"""``libcamera._libcamera``: the compiled module's classes (picamera2 isinstance-checks these)."""

from . import ColorSpace, Transform  # noqa: F401
