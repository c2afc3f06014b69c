"""Stub of pykms (picamera2's DRM preview names its pixel formats at import; the station
never shows a preview, so nothing here draws)."""

import enum


class PixelFormat(enum.Enum):
    RGB888 = "RG24"
    BGR888 = "BG24"
    YUYV = "YUYV"
    YVYU = "YVYU"
    XRGB8888 = "XR24"
    XBGR8888 = "XB24"
    ABGR8888 = "AB24"
    YUV420 = "YU12"
    YVU420 = "YV12"


class PlaneType(enum.Enum):
    Primary = 1
    Overlay = 2
