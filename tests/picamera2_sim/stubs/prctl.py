"""Stub of python-prctl (picamera2's FfmpegOutput imports it; the station never uses it)."""


def set_pdeathsig(signal: int) -> None:
    raise NotImplementedError("prctl stub: FfmpegOutput is not simulated")
