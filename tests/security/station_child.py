"""A child process that does what the station does with plaintext, for tests/security.

Usage: ``python station_child.py MODE SEED`` with MODE one of

* ``seal`` — seal and vault 20 captures, wipe, exit (run under strace);
* ``writefile`` — the positive control: also write, rename and delete a file;
* ``residue`` / ``residue-sim`` — take one capture into a camera-like ``BytesIO``
  buffer / through the drivers' ``SimulatedCamera.capture_jpeg``, and wait; on each line read
  from stdin advance one step (``seal``: seal into the vault and wipe, dropping the
  session; ``exit``), printing the step name when done;
* ``sigterm`` — hold 10 captures with the signal handlers installed and wait.

The image marker and the patient id are derived from SEED one byte at a time straight
into mutable buffers (:func:`derive_into`), so the process never holds them as an
immutable ``bytes`` the test did not account for; the test derives the same values.
Nothing here writes a file except ``writefile``.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from clinicam.common.zeroize import is_zero, zero
from clinicam.firmware.capture.memory import harden_process
from clinicam.firmware.capture.vault import Vault, WipeReport
from clinicam.firmware.capture.wipe import SignalWipe, Wiper, report_line
from clinicam.protocol.recipient import generate_recipient_key
from clinicam.protocol.sealing import Sealer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEVICE = "cam-sec-01"
MARKER_LEN = 32
PATIENT_PREFIX = "CANARY-PATIENT-"


def expected(seed: int) -> tuple[bytes, bytes]:
    """The marker and patient id for ``seed``, as the test computes them."""
    marker = bytes(_stream(seed, "marker", MARKER_LEN))
    patient = PATIENT_PREFIX.encode() + bytes(b"0123456789abcdef"[x % 16]
                                              for x in _stream(seed, "patient", 16))
    return marker, patient


def _stream(seed: int, label: str, n: int) -> list[int]:
    # A byte generator without holding its output as one contiguous bytes object.
    state = int.from_bytes(hashlib.sha256(f"{label}:{seed}".encode()).digest()[:8], "big")
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append((state >> 33) & 0xFF)
    return out


def derive_into(view: Any, seed: int, label: str, n: int) -> None:
    for i, value in enumerate(_stream(seed, label, n)):
        view[i] = value


def patient_id(seed: int) -> str:
    """The synthetic patient id as a ``str``, as the session would hold it."""
    buf = bytearray(PATIENT_PREFIX.encode() + bytes(16))
    for i, value in enumerate(_stream(seed, "patient", 16)):
        buf[len(PATIENT_PREFIX) + i] = b"0123456789abcdef"[value % 16]
    text = buf.decode("ascii")
    zero(buf)
    return text


def make_sealer(vault: Vault | None = None) -> Sealer:
    """A sealer wired as the station wires it: ciphertext in the vault's arena."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    ca = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "security test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return Sealer(DEVICE, key, pem, generate_recipient_key("X25519").public_key(), buffers=vault)


def take_still(seed: int, size: int = 400_000) -> tuple[io.BytesIO, memoryview]:
    """A JPEG-shaped still in a ``BytesIO``, the buffer picamera2 writes into."""
    still = io.BytesIO()
    still.write(b"\xff\xd8\xff\xe0")
    still.write(bytes(size))
    still.write(b"\xff\xd9")
    view = still.getbuffer()
    derive_into(view[1000:1000 + MARKER_LEN], seed, "marker", MARKER_LEN)
    return still, view


def take_simulated_still(seed: int) -> tuple[bytearray, bytearray]:
    """The drivers' ``SimulatedCamera.capture_jpeg`` path, marker in a JPEG comment.

    The marker must be handed to the camera as ``bytes`` (the camera keeps it to
    plant in every still); the camera is dropped before sealing, as a real camera
    holds no marker at all. Returns the still and the camera-side buffer to zero.
    """
    from clinicam.drivers.camera import SimulatedCamera

    planted = bytearray(MARKER_LEN)
    derive_into(planted, seed, "marker", MARKER_LEN)
    camera = SimulatedCamera(still_size=(640, 480), marker=bytes(planted))
    into = bytearray()
    camera.capture_jpeg(into)
    camera.close()
    del camera
    return into, planted


def metadata(seed: int) -> dict[str, Any]:
    return {"patient": {"id": patient_id(seed), "issuer": "GS1", "encounter": None},
            "image": {"media_type": "image/jpeg", "width": 640, "height": 480}}


def seal_many(sealer: Sealer, vault: Vault, seed: int, n: int) -> None:
    for k in range(n):
        image = bytearray(200_000)
        derive_into(memoryview(image)[500:532], seed + k, "marker", MARKER_LEN)
        vault.put(sealer.seal(image, metadata(seed)))


def mode_seal(seed: int, write_file: bool) -> None:
    vault = Vault()
    seal_many(make_sealer(vault), vault, seed, 20)
    report = Wiper(vault).wipe("command")
    if write_file:
        path = f"/tmp/clinicam-positive-control-{os.getpid()}"
        with open(path, "wb") as f:
            f.write(b"positive control")
        os.rename(path, path + ".done")
        os.unlink(path + ".done")
    print(report.count, flush=True)


def mode_residue(seed: int, simulated: bool) -> None:
    harden_process(require=False)
    vault = Vault()
    sealer = make_sealer(vault)
    wiper = Wiper(vault)
    if simulated:
        image, planted = take_simulated_still(seed)
        zero(planted)
    else:
        still, image = take_still(seed)
    session = metadata(seed)
    print("captured", flush=True)
    sys.stdin.readline()
    with wiper.guard(image):
        vault.put(sealer.seal(image, session))
    if not simulated:
        image.release()
        still.close()
        del still
    del image, session  # the session closes: the workflow drops the patient id
    wiper.wipe("command")
    print("sealed", flush=True)
    sys.stdin.readline()


def mode_sigterm(seed: int) -> None:
    vault = Vault()
    sealer = make_sealer(vault)
    seal_many(sealer, vault, seed, 10)
    held = [p for cid in vault.ids() for p in _parts(vault, cid)]

    def announce(report: WipeReport) -> None:
        zeroed = sum(1 for p in held if is_zero(p))
        print(f"{report_line(report)} zeroed_parts={zeroed}/{len(held)}", flush=True)

    SignalWipe(Wiper(vault), drain=lambda: None, drain_timeout_s=1.0,
               announce=announce).install()
    print("ready " + ",".join(vault.ids()), flush=True)
    threading.Event().wait()


def _parts(vault: Vault, capture_id: str) -> list[Any]:
    with vault.lock:
        return list(vault._entries[capture_id].sealed.parts)


def main() -> None:
    mode, seed = sys.argv[1], int(sys.argv[2])
    if mode in ("seal", "writefile"):
        mode_seal(seed, write_file=mode == "writefile")
    elif mode in ("residue", "residue-sim"):
        mode_residue(seed, simulated=mode == "residue-sim")
    elif mode == "sigterm":
        mode_sigterm(seed)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
