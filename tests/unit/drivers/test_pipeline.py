# ruff: noqa: E501  (the scene data below: one frame per line)
"""The reading pipeline on rendered hard frames (drivers/pipeline.py, DESIGN §10).

Each hard condition has a frame one plain zxing-cpp call misses and the pipeline reads;
the same frame with its symbols damaged must be refused by both. The full hard corpus
is measured in ``make bench`` (bench/bench_decode_hard.py), not here.
"""

from __future__ import annotations

import dataclasses

import pytest
from clinicam.drivers import pipeline, preprocess
from clinicam.drivers.camera import SimulatedCamera
from clinicam.drivers.pipeline import Budget, PipelineReader, StreamReader
from clinicam.drivers.readers import SYMBOLOGIES, ZxingReader
from clinicam.drivers.scenes import Conditions, Scene, Symbol
from clinicam.firmware.codes.gs1 import plausible

VALID = "796123456789012345"  # GSRN with a good check digit
BAD = "796123456789012343"  # the same with a wrong one


# One frame per hard condition, drawn from ``corpus.hard_samples(seed=15)`` as a frame
# that one plain zxing-cpp call misses and the pipeline reads (identifiers synthetic).
# ``nominal`` has none: plain zxing-cpp reads every nominal frame.
HARD_FRAMES = {
    'blur-1.5': (Scene(symbols=(Symbol(content='(8018)135425380196419812(8019)186667', symbology='gs1-128', module_px=3.212658999018113, angle=4.082093379825512, center=(0.4839091197184508, 0.5218528444131041), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=1.5, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=237207128), [('gs1-128', '8018135425380196419812\x1d8019186667')]),
    'blur-2.0': (Scene(symbols=(Symbol(content='CLINICAM:END', symbology='qr', module_px=3.6026420906663272, angle=5.039422332923575, center=(0.4964565479915337, 0.5453759226432301), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=2.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=583795515), [('qr', 'CLINICAM:END')]),
    'curved': (Scene(symbols=(Symbol(content='(8017)479901512700122301', symbology='gs1-128', module_px=2.7053401431564117, angle=4.138704714638068, center=(0.44378099284102085, 0.5263905496988511), renderer='zxing', tilt=0.0, curvature=0.22832561374116803, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=752742638), [('gs1-128', '8017479901512700122301')]),
    'glare': (Scene(symbols=(Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=3.331843877889781, angle=5.539984505877369, center=(0.557551823129692, 0.46689690563966907), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.8395565477664055, background='gradient'), seed=700537476), [('qr', 'CLINICAM:LAT:LEFT')]),
    'jpeg-15': (Scene(symbols=(Symbol(content='MRN76647294', symbology='code128', module_px=2.6815959210652047, angle=-5.715855805786984, center=(0.46754053820703745, 0.46911456965614434), renderer='python-barcode', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=15, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=2035106835), [('code128', 'MRN76647294')]),
    'low-contrast': (Scene(symbols=(Symbol(content='MRN15866431', symbology='code128', module_px=2.02197151736468, angle=-5.461748999964967, center=(0.46554710921542847, 0.5519956224730629), renderer='python-barcode', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.8, noise=4.0, contrast=0.23529411764705882, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='smooth'), seed=1278581019), [('code128', 'MRN15866431')]),
    'module-1.5px': (Scene(symbols=(Symbol(content='MRN67950283', symbology='code128', module_px=1.524284983507642, angle=0.07973420334727255, center=(0.5507158250606045, 0.5081493639228389), renderer='python-barcode', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=969739770), [('code128', 'MRN67950283')]),
    'module-1px': (Scene(symbols=(Symbol(content='(8018)022969401354009095', symbology='gs1-datamatrix', module_px=1.5771353028999642, angle=1.6189157385709851, center=(0.30218464345654533, 0.5564472459409344), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='4096152175198', symbology='ean13', module_px=2.1881136140130835, angle=-6.848643522300115, center=(0.8, 0.6178912310785685), renderer='zxing', tilt=0.0, curvature=0.0, damage=None)), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=1147171862), [('gs1-datamatrix', '8018022969401354009095')]),
    'motion': (Scene(symbols=(Symbol(content='CLINICAM:LAT:LEFT', symbology='qr', module_px=3.65045304062891, angle=-5.431349940415712, center=(0.5600054175311635, 0.5695395145332487), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=5.989862420810891, motion_angle=48.65426789830192, glare=0.0, background='gradient'), seed=1090196694), [('qr', 'CLINICAM:LAT:LEFT')]),
    'multi': (Scene(symbols=(Symbol(content='MRN21903638', symbology='pdf417', module_px=3.3165530107082253, angle=-11.404827761357996, center=(0.27, 0.35), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='CLINICAM:PURPOSE:WOUND', symbology='qr', module_px=3.5467310565613563, angle=-11.404827761357996, center=(0.73, 0.65), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='(8017)495646913249091282', symbology='gs1-qr', module_px=3.104240248604641, angle=-11.404827761357996, center=(0.3, 0.78), renderer='zxing', tilt=0.0, curvature=0.0, damage=None)), conditions=Conditions(blur=0.0, noise=0.4274368712660994, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='skin'), seed=1906463683), [('gs1-qr', '8017495646913249091282'), ('pdf417', 'MRN21903638'), ('qr', 'CLINICAM:PURPOSE:WOUND')]),
    'noise-20': (Scene(symbols=(Symbol(content='MRN38616078', symbology='pdf417', module_px=2.684488534813191, angle=3.482765318114625, center=(0.41407206329523694, 0.5388577186974752), renderer='zxing', tilt=0.0, curvature=0.0, damage=None), Symbol(content='4018257583265', symbology='ean13', module_px=2.4509290703244315, angle=2.783827408612737, center=(0.8, 0.5086265228284399), renderer='zxing', tilt=0.0, curvature=0.0, damage=None)), conditions=Conditions(blur=0.0, noise=20.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1402796066), [('pdf417', 'MRN38616078')]),
    'rot-any': (Scene(symbols=(Symbol(content='(8018)534366029691928465(8019)140771', symbology='gs1-128', module_px=2.3166692518041385, angle=206.94838536148814, center=(0.43589401222124424, 0.42689771974400587), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='gradient'), seed=430441488), [('gs1-128', '8018534366029691928465\x1d8019140771')]),
    'rot30': (Scene(symbols=(Symbol(content='(8018)797836867174096156(8019)845263', symbology='gs1-128', module_px=3.113345306836642, angle=-30.840232970680745, center=(0.5197797759989521, 0.4571899915555263), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1581068963), [('gs1-128', '8018797836867174096156\x1d8019845263')]),
    'rot45': (Scene(symbols=(Symbol(content='(8018)213792683557714651(8019)316604', symbology='gs1-128', module_px=2.6134424766179496, angle=46.594001197647316, center=(0.5072081145291665, 0.49289937564944103), renderer='zxing', tilt=0.0, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1626143647), [('gs1-128', '8018213792683557714651\x1d8019316604')]),
    'tilt-40': (Scene(symbols=(Symbol(content='MRN93785696', symbology='qr', module_px=3.091160292380776, angle=2.4817305153787483, center=(0.5466602503942843, 0.49495948054805144), renderer='segno', tilt=-31.120092883278005, curvature=0.0, damage=None),), conditions=Conditions(blur=0.0, noise=0.0, contrast=1.0, jpeg_quality=None, motion=0.0, motion_angle=0.0, glare=0.0, background='cloth'), seed=1819585714), [('qr', 'MRN93785696')]),
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
    got = found(reader.decode(frame))
    assert set(wanted) <= got  # the pipeline reads it
    assert {c[0] for c in got - set(wanted)} <= {"ean13"}  # and else only the distractor


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
    original = preprocess.linear_variants
    monkeypatch.setattr(preprocess, "linear_variants", lambda up: list(original(up))[:1])
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


def test_stream_reader_accepts_on_the_next_frame(monkeypatch):
    """On the camera stream a single preprocessed read waits for the next frame."""
    original = preprocess.linear_variants
    monkeypatch.setattr(preprocess, "linear_variants", lambda up: list(original(up))[:1])
    stream = StreamReader(PipelineReader(SYMBOLOGIES, gs1=plausible, clock=still))
    frame = _band(VALID, angle=45).render()
    assert stream.decode(frame) == []
    assert found(stream.decode(frame)) == {("gs1-128", f"8018{VALID}")}
    other = _band("796123456789012352", angle=45).render()  # a different band now
    assert stream.decode(other) == []


def test_pass_outcomes_never_carry_the_code(reader):
    """What ``clinicam scan -v`` and a log may show of a reading holds no payload."""
    frames = [HARD_FRAMES[c][0].render(1280, 720) for c in ("rot45", "blur-2.0", "tilt-40")]
    for frame in frames:
        reading = reader.read(frame)
        assert reading.codes  # positive control: something was read
        shown = repr(reading.passes) + repr(reading.codes) + repr(reading.tentative)
        for code in reading.codes:
            assert code.text not in shown and code.text[-6:] not in shown
