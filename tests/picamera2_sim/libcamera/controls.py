"""``libcamera.controls``: control ids and the enums picamera2 names."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ControlType(enum.Enum):
    Null = 0
    Bool = 1
    Byte = 2
    Integer32 = 3
    Integer64 = 4
    Float = 5
    String = 6
    Rectangle = 7
    Size = 8


_TYPES = {"ScalerCrop": ControlType.Rectangle, "Model": ControlType.String, "PixelArraySize": ControlType.Size,
          "FrameDurationLimits": ControlType.Integer64, "LensPosition": ControlType.Float,
          "AnalogueGain": ControlType.Float}


@dataclass(frozen=True)
class ControlId:
    id: int
    name: str
    type: ControlType

    def __repr__(self) -> str:
        return f"libcamera.ControlId({self.id}, {self.name})"


@dataclass(frozen=True)
class ControlInfo:
    min: Any
    max: Any
    default: Any


_IDS: dict[str, ControlId] = {}


def ctl(name: str) -> ControlId:
    """The one ControlId of ``name`` (ids are compared by identity in dicts)."""
    if name not in _IDS:
        _IDS[name] = ControlId(len(_IDS) + 1, name, _TYPES.get(name, ControlType.Integer32))
    return _IDS[name]


ExposureTime = ctl("ExposureTime")
ExposureTimeMode = ctl("ExposureTimeMode")
AnalogueGain = ctl("AnalogueGain")
AnalogueGainMode = ctl("AnalogueGainMode")


class AfModeEnum(enum.IntEnum):
    Manual = 0
    Auto = 1
    Continuous = 2


class AfTriggerEnum(enum.IntEnum):
    Start = 0
    Cancel = 1


class AfStateEnum(enum.IntEnum):
    Idle = 0
    Scanning = 1
    Focused = 2
    Failed = 3


class draft:
    class NoiseReductionModeEnum(enum.IntEnum):
        Off = 0
        Fast = 1
        HighQuality = 2
        Minimal = 3
        ZSL = 4
