# ruff: noqa: E501  (the scene data below: one frame per line)
"""The reading pipeline on rendered hard frames (drivers/pipeline.py, DESIGN §10).

Each hard condition has a frame one plain zxing-cpp call misses and the pipeline reads;
the same frame with its symbols damaged must be refused by both. The full hard corpus
is measured in ``make bench`` (bench/bench_decode_hard.py), not here.
"""

from __future__ import annotations

import dataclasses

import pytest
from clinicam.drivers import pipeline
from clinicam.drivers.camera import SimulatedCamera
from clinicam.drivers.pipeline import Budget, PipelineReader, StreamReader
from clinicam.drivers.readers import SYMBOLOGIES, ZxingReader
from clinicam.drivers.scenes import Conditions, Scene, Symbol
from clinicam.firmware.gs1 import plausible

VALID = "796123456789012345"  # GSRN with a good check digit
BAD = "796123456789012343"  # the same with a wrong one


# One frame per hard condition, drawn from ``corpus.hard_samples(seed=15)`` as a frame
# that one plain zxing-cpp call misses and the pipeline reads (identifiers synthetic).
# ``nominal`` has none: plain zxing-cpp reads every nominal frame.
HARD_FRAMES = {
    'rot30': (Scene(symbols=(Symbol(content='(8018)911136351653063687(8019)843055', symbology='gs1-128', module_px=2.4846190247683113, angle=-28.27359675363385, center=(0.5253830754168154, 0.5541381743305432), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=331069006), [('gs1-128', '8018911136351653063687\x1d8019843055')]),
    'rot45': (Scene(symbols=(Symbol(content='(8018)797836867174096156(8019)845263', symbology='gs1-128', module_px=2.8163498004921452, angle=-43.4791329910455, center=(0.5197797759989521, 0.4571899915555263), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1581068963), [('gs1-128', '8018797836867174096156\x1d8019845263')]),
    'rot-any': (Scene(symbols=(Symbol(content='MRN73135445', symbology='code128', module_px=2.098369012723288, angle=245.32071432843887, center=(0.560685104737098, 0.5263966670468471), renderer='python-barcode', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=808109558), [('code128', 'MRN73135445')]),
    'module-1px': (Scene(symbols=(Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=1.6365091552500133, angle=-2.2346221099172325, center=(0.47111743873611445, 0.4817008136279823), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='smooth'), seed=119073751), [('qr', 'CLINICAM:LAT:LEFT')]),
    'blur-1.5': (Scene(symbols=(Symbol(content='(8018)534366029691928465(8019)140771', symbology='gs1-128', module_px=2.8111128345360923, angle=1.1815388791548873, center=(0.43589401222124424, 0.42689771974400587), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=1.5, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=430441488), [('gs1-128', '8018534366029691928465\x1d8019140771')]),
    'blur-2.0': (Scene(symbols=(Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=4.155110165529376, angle=1.4090119091308049, center=(0.4587313999824594, 0.45542637402684777), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=2.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='smooth'), seed=870961898), [('qr', 'CLINICAM:LAT:LEFT')]),
    'motion': (Scene(symbols=(Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=3.65045304062891, angle=-5.431349940415712, center=(0.5600054175311635, 0.5695395145332487), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=5.989862420810891, motion_angle=48.65426789830192, glare=0.0, background='gradient'), seed=1090196694), [('qr', 'CLINICAM:LAT:LEFT')]),
    'noise-20': (Scene(symbols=(Symbol(content='(8018)785405509989133541(8019)301903', symbology='gs1-128', module_px=2.1664870884650815, angle=4.431549964418375, center=(0.479547073176933, 0.4329586639385189), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=20.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=959028812), [('gs1-128', '8018785405509989133541\x1d8019301903')]),
    'low-contrast': (Scene(symbols=(Symbol(content='(8018)956010843596007834', symbology='gs1-datamatrix', module_px=2.0584058670884744, angle=5.068743067654687, center=(0.5305320372754305, 0.5716145350641462), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.8, noise=4.0, contrast=0.23529411764705882, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=675210528), [('gs1-datamatrix', '8018956010843596007834')]),
    'tilt-40': (Scene(symbols=(Symbol(content='MRN93785696', symbology='qr', module_px=3.091160292380776, angle=2.4817305153787483, center=(0.5466602503942843, 0.49495948054805144), renderer='segno', tilt=-31.120092883278005, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1819585714), [('qr', 'MRN93785696')]),
    'glare': (Scene(symbols=(Symbol(content='MRN21703278', symbology='qr', module_px=2.7711031886974316, angle=2.200028414670255, center=(0.5770368081424156, 0.45547151031362226), renderer='segno', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.9818331494645536, background='skin'), seed=196412389), [('qr', 'MRN21703278')]),
    'module-1.5px': (Scene(symbols=(Symbol(content='(8018)152666431222101378(8019)227065', symbology='gs1-128', module_px=1.5486653100396488, angle=3.7105055704132033, center=(0.531321587686052, 0.43856846282667294), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=269746608), [('gs1-128', '8018152666431222101378\x1d8019227065')]),
    'jpeg-15': (Scene(symbols=(Symbol(content='MRN76647294', symbology='code128', module_px=2.6815959210652047, angle=-5.715855805786984, center=(0.46754053820703745, 0.46911456965614434), renderer='python-barcode', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=15, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=2035106835), [('code128', 'MRN76647294')]),
    'curved': (Scene(symbols=(Symbol(content='(8017)479901512700122301', symbology='gs1-128', module_px=2.7053401431564117, angle=4.138704714638068, center=(0.44378099284102085, 0.5263905496988511), renderer='zxing', tilt=0.0, curvature=0.22832561374116803, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=752742638), [('gs1-128', '8017479901512700122301')]),
    'multi': (Scene(symbols=(Symbol(content='(8018)363314227534896282(8019)976680', symbology='gs1-128', module_px=1.8547658953057908, angle=-12.573601615568482, center=(0.27, 0.35), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=2.738986080567556, angle=-12.573601615568482, center=(0.73, 0.65), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='(8017)099658169283768238', symbology='gs1-qr', module_px=3.673969822991687, angle=-12.573601615568482, center=(0.3, 0.78), renderer='zxing', tilt=0.0, curvature=0.0, damage=None)), conditions=Conditions(blur=0.0, noise=0.4475491646236831, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=966155389), [('gs1-128', '8018363314227534896282\x1d8019976680'), ('gs1-qr', '8017099658169283768238'), ('qr', 'CLINICAM:LAT:LEFT')]),
}


def found(codes):
    return {(c.symbology, c.text) for c in codes}


@pytest.fixture(scope="module")
def plain():
    return ZxingReader(SYMBOLOGIES)


def still(_: object = None) -> float:
    """A clock that never moves: the time budget never cuts a pass short, so results
    do not depend on how loaded the machine is (the region budget still applies)."""
    return 0.0


@pytest.fixture(scope="module")
def reader():
    return PipelineReader(SYMBOLOGIES, gs1=plausible, clock=still)


def test_every_hard_condition_has_a_frame():
    from clinicam.drivers.corpus import HARD_CONDITIONS

    assert set(HARD_CONDITIONS) - set(HARD_FRAMES) == {"nominal", "no-code"}


@pytest.mark.parametrize("condition", sorted(HARD_FRAMES))
def test_pipeline_reads_what_plain_zxing_misses(condition, plain, reader):
    scene, wanted = HARD_FRAMES[condition]
    frame = scene.render(1280, 720)
    assert not set(wanted) <= found(plain.decode(frame))  # the plain call misses it
    assert found(reader.decode(frame)) == set(wanted)  # the pipeline reads it, only it


@pytest.mark.parametrize("condition", sorted(HARD_FRAMES))
def test_damaged_frame_is_refused_by_both(condition, plain, reader):
    scene, _ = HARD_FRAMES[condition]
    damaged = dataclasses.replace(scene, symbols=tuple(
        dataclasses.replace(s, damage=(0.42, 0.5)) for s in scene.symbols))
    frame = damaged.render(1280, 720)
    assert plain.decode(frame) == []
    reading = reader.read(frame)
    assert reading.codes == [] and reading.tentative == []


def test_no_code_frames_give_nothing(reader):
    for background in ("cloth", "skin", "gradient"):
        frame = Scene((), Conditions(noise=15, background=background), seed=7).render()
        assert reader.decode(frame) == []


def _band(gsrn: str, **kw: object) -> Scene:
    return Scene((Symbol(f"(8018){gsrn}", "gs1-128", 2.6, **kw),),  # type: ignore[arg-type]
                 Conditions(background="skin"), seed=4)


def test_misprinted_check_digit_is_not_corrected(reader):
    # Straight on, the fast pass reads the band as printed: the classifier then refuses
    # it with 'check-digit' (the nurse sees why). At 45° only a preprocessed pass can
    # read it, and there a failing check digit is refused outright.
    straight = reader.decode(_band(BAD).render())
    assert found(straight) == {("gs1-128", f"8018{BAD}")}
    turned = reader.read(_band(BAD, angle=45).render())
    assert turned.codes == [] and turned.tentative == []
    assert any(p.outcome.startswith("refused: GS1") for p in turned.passes)
    control = reader.decode(_band(VALID, angle=45).render())  # positive control
    assert found(control) == {("gs1-128", f"8018{VALID}")}


def test_one_preprocessed_linear_read_is_only_tentative(reader, monkeypatch):
    frame = _band(VALID, angle=45).render()
    original = pipeline._linear_variants
    monkeypatch.setattr(pipeline, "_linear_variants", lambda up: list(original(up))[:1])
    first = reader.read(frame)
    assert first.codes == [] and found(first.tentative) == {("gs1-128", f"8018{VALID}")}
    second = reader.read(frame, confirmed=first.tentative)  # the next frame agrees
    assert found(second.codes) == {("gs1-128", f"8018{VALID}")}
    other = reader.read(frame, confirmed=[])  # no earlier read: still not a code
    assert other.codes == []


def test_budget_bounds_region_passes(reader):
    frame = _band(VALID, angle=45).render()
    stingy = PipelineReader(SYMBOLOGIES, gs1=plausible, budget=Budget(regions=0), clock=still)
    reading = stingy.read(frame)
    assert reading.codes == [] and len(reading.unresolved) == 1
    assert not any(p.name.startswith("region") for p in reading.passes)
    ticks = iter(range(0, 10**6, 1000))  # a clock where every call costs a second
    slow = PipelineReader(SYMBOLOGIES, gs1=plausible, clock=lambda: next(ticks) / 1000)
    late = slow.read(frame)
    assert late.codes == [] and late.unresolved
    assert found(reader.decode(frame)) == {("gs1-128", f"8018{VALID}")}  # control


def test_still_crop_reads_what_the_scan_frame_cannot():
    # 1.1 px modules at 1280 px: 0.55 px in a 640x360 scan frame, 2.2 px in the still.
    scene = Scene((Symbol(f"(8018){VALID}", "gs1-128", 1.1),), seed=2)
    camera = SimulatedCamera((640, 360), (2560, 1440))
    camera.show(scene)
    frame = next(camera.scan_frames())
    wanted = {("gs1-128", f"8018{VALID}")}
    alone = StreamReader(PipelineReader(SYMBOLOGIES, gs1=plausible, clock=still))
    assert found(alone.decode(frame)) == set() and alone.last and alone.last.unresolved
    stream = StreamReader(PipelineReader(SYMBOLOGIES, gs1=plausible, clock=still), camera)
    codes = stream.decode(frame)
    if not codes:  # a preprocessed linear read: the next frame confirms it
        codes = stream.decode(next(camera.scan_frames()))
    assert found(codes) == wanted
    assert any(p.name == "still crop" for p in stream.last.passes)
    x0, y0 = codes[0].position[0]
    assert 0 <= x0 < 640 and 0 <= y0 < 360  # positions in scan-frame pixels


def test_gs1_plausible():
    assert plausible(f"8018{VALID}\x1d801912")
    assert not plausible(f"8018{BAD}")
    assert not plausible("80189999")
    assert pipeline._gs1_check_digits(f"8018{VALID}")
    assert not pipeline._gs1_check_digits(f"8018{BAD}")
