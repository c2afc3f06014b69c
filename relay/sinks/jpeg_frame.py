"""What a JPEG's own start-of-frame header says about its pixels.

The relay never re-encodes a clinical photo, so the DICOM object's Image Pixel
attributes (``clinicam.relay.sinks.dicom``) are read from here: they cannot disagree with
the JPEG they describe. Only baseline 8-bit JPEG passes, because only that may be
labelled with the JPEG Baseline transfer syntax.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JpegFrame:
    """What the JPEG's start-of-frame header says about its pixels."""

    width: int
    height: int
    components: int
    precision: int
    subsampled: bool

    @property
    def photometric(self) -> str:
        """PS3.5 §8.2.1: YBR_FULL_422 when the chroma is subsampled, else YBR_FULL."""
        if self.components == 1:
            return "MONOCHROME2"
        return "YBR_FULL_422" if self.subsampled else "YBR_FULL"


_SOF_BASELINE = 0xC0
_SOF_OTHERS = {0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def read_jpeg_frame(jpeg: bytes) -> JpegFrame:
    """Parse the markers up to the baseline SOF0; refuse any other kind of JPEG.

    Only baseline 8-bit JPEG may be labelled with the JPEG Baseline transfer syntax,
    and we never transcode, so anything else is refused rather than mislabelled.
    """
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("image is not a JPEG (no SOI marker)")
    pos = 2
    while pos + 4 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            raise ValueError("JPEG marker stream is corrupt")
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if marker == _SOF_BASELINE:
            return _parse_sof(jpeg[pos + 4 : pos + 2 + length])
        if marker in _SOF_OTHERS:
            raise ValueError("JPEG is not baseline (SOF0): cannot be sent as JPEG Baseline")
        if marker == 0xDA:
            break
        pos += 2 + length
    raise ValueError("JPEG has no start-of-frame header")


def _parse_sof(body: bytes) -> JpegFrame:
    precision, components = body[0], body[5]
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    samplings = [body[6 + 3 * i + 1] for i in range(components)]
    if precision != 8 or components not in (1, 3) or not width or not height:
        raise ValueError("JPEG must be 8-bit, 1 or 3 components, with known dimensions")
    return JpegFrame(width, height, components, precision, len(set(samplings)) > 1)
