"""``libcamera.properties``: the enum picamera2's ``is_mono`` names."""

from __future__ import annotations

import enum


class draft:
    class ColorFilterArrangementEnum(enum.IntEnum):
        RGGB = 0
        GRBG = 1
        GBRG = 2
        BGGR = 3
        RGB = 4
        MONO = 5
