"""The station's devices, built from ``[hardware] backend``: real on a Pi, simulated elsewhere.

One pin factory for every gpiozero device (lgpio on a Pi, ``MockFactory`` in
simulation) and one camera; the workflow never learns which. A station configured for
``pi`` never falls back to simulation: a missing camera or GPIO chip is a
``HardwareError`` with its remedy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clinicam.drivers.camera import Camera, Picamera2Camera, SimulatedCamera
from clinicam.drivers.hid import HidScanner
from clinicam.drivers.panel import Panel
from clinicam.drivers.pins import make_pin_factory
from clinicam.drivers.pipeline import PipelineReader, StreamReader
from clinicam.drivers.power import PowerInputs
from clinicam.drivers.readers import Code, CodeReader, make_reader
from clinicam.firmware.clock import ClockSource, KernelClock, SimulatedClock
from clinicam.firmware.codes import gs1
from clinicam.firmware.config import StationConfig

# Simulated stills are rendered, not sensed: keep them a realistic but quick size.
SIM_STILL = (2304, 1296)


@dataclass
class Hardware:
    """Everything the station touches; ``close()`` releases it all."""

    backend: str
    pin_factory: Any
    camera: Camera
    reader: CodeReader
    panel: Panel
    power: PowerInputs
    clock_sync: ClockSource  # is the system clock synchronised (not a time source)
    scanner: HidScanner | None = None

    def close(self) -> None:
        for part in (self.scanner, self.power, self.panel, self.camera):
            if part is None:
                continue
            try:
                part.close()
            except Exception:  # noqa: S112 - closing must go on for the other parts
                continue
        close = getattr(self.pin_factory, "close", None)
        if close is not None:
            close()


def build_camera(config: StationConfig) -> Camera:
    cam = config.camera
    if (config.hardware.camera or config.hardware.backend) == "sim":
        folder = Path(config.hardware.sim_images) if config.hardware.sim_images else None
        return SimulatedCamera(
            frame_size=(cam.lores_width, cam.lores_height),
            still_size=SIM_STILL,
            folder=folder,
            jpeg_quality=cam.jpeg_quality,
        )
    return Picamera2Camera(
        still_size=(cam.still_width, cam.still_height),
        lores_size=(cam.lores_width, cam.lores_height),
        jpeg_quality=cam.jpeg_quality,
        autofocus=cam.autofocus,
        tuning_file=cam.tuning_file or None,
    )


class HardwareBuilder(Protocol):
    """Opens the devices with the station's input callbacks (``build_hardware`` bound to a config).

    The station calls it once its event queue exists, so a driver thread that fires at
    once already has somewhere to post.
    """

    def __call__(
        self,
        *,
        on_press: Callable[[], None],
        on_long_press: Callable[[], None],
        on_power: Callable[[str], None],
        on_code: Callable[[Code], None] | None = None,
    ) -> Hardware: ...


def build_hardware(
    config: StationConfig,
    *,
    on_press: Callable[[], None],
    on_long_press: Callable[[], None],
    on_power: Callable[[str], None],
    on_code: Callable[[Code], None] | None = None,
) -> Hardware:
    """Open every device; callbacks run on driver threads and must only post events."""
    backend = config.hardware.backend
    factory = make_pin_factory(backend)
    p, pw = config.panel, config.power
    panel = Panel(
        factory,
        p.shutter_pin,
        light=p.light,
        red_pin=p.red_pin,
        green_pin=p.green_pin,
        blue_pin=p.blue_pin,
        light_active_high=p.light_active_high,
        buzzer_pin=p.buzzer_pin,
        buzzer=p.buzzer,
        long_press_s=p.long_press_s,
        bounce_s=p.bounce_s,
        on_press=on_press,
        on_long_press=on_long_press,
    )
    settling = [True]  # the simulated cart being "plugged in" below is not an event

    def power_event(name: str) -> None:
        if not settling[0]:
            on_power(name)

    power = PowerInputs(
        factory,
        mains_pin=pw.mains_pin,
        mains_active_high=pw.mains_active_high,
        battery_pin=pw.battery_pin,
        battery_active_high=pw.battery_active_high,
        tamper_pin=pw.tamper_pin,
        tamper_active_high=pw.tamper_active_high,
        on_event=power_event,
        report_initial=backend != "sim",
    )
    if backend == "sim" and pw.mains_pin is not None:
        # A simulated cart starts plugged in; its pull resistor alone would read "lost".
        mains = factory.pin(pw.mains_pin)
        (mains.drive_high if pw.mains_active_high else mains.drive_low)()
    settling[0] = False
    camera = build_camera(config)
    reader = make_reader(config.reader.engine, config.reader.formats)
    if isinstance(reader, PipelineReader):
        # Next-frame agreement, and a still crop where the camera offers one.
        reader = StreamReader(PipelineReader(config.reader.formats, gs1=gs1.plausible),
                              camera if hasattr(camera, "capture_region") else None,
                              crop_every_s=getattr(camera, "region_interval_s", 0.3))
    clock_sync: ClockSource = SimulatedClock(True) if backend == "sim" else KernelClock()
    scanner = None
    if config.reader.hid_device and on_code is not None:
        # Grabbed exclusively: a scanned wristband must never type into a console.
        scanner = HidScanner(config.reader.hid_device, on_code)
    return Hardware(backend, factory, camera, reader, panel, power, clock_sync, scanner)
