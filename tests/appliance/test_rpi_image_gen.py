"""The release image recipe against rpi-image-gen as pinned in image-build/rpi-image-gen/TAG.

Offline (GitHub is unreachable from CI), so: the pinned tag's own metadata parser,
vendored unchanged in rpi-image-gen/upstream/, lints and validates our layer and image
layer; the image asset directory follows upstream's layout (pre-image.sh beside the
genimage template), and pre-image.sh, called as rpi-image-gen's runner calls it, leaves
a genimage*.cfg in the output directory (without one rpi-image-gen makes no image and
says nothing). A full build, layer dependency resolution and a boot need the real
tool, the Raspberry Pi archive and a Pi (TAG, image-build/README.md).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from appliance_support import IMAGE_BUILD

RIG = IMAGE_BUILD / "rpi-image-gen"
UPSTREAM = RIG / "upstream"
LAYERS = [RIG / "layer/clinicam-appliance.yaml", RIG / "image/clinicam/clinicam-image.yaml"]
# rpi-image-gen's bin/ig, reduced to its metadata subcommand.
IG_METADATA = """
import argparse, sys
sys.path.insert(0, sys.argv.pop(1))
from metadata_parser import Metadata_register_parser
parser = argparse.ArgumentParser()
Metadata_register_parser(parser.add_subparsers(dest="command"))
args, unknown = parser.parse_known_args(sys.argv[1:])
args._unknown = unknown
args.func(args)
"""


def pin() -> tuple[str, str]:
    lines = [line for line in (RIG / "TAG").read_text().splitlines() if line.strip() and not line.startswith("#")]
    tag, commit = lines[-1].split()
    return tag, commit


def metadata(mode: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", IG_METADATA, str(UPSTREAM / "site"), "metadata", mode, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_pin_is_a_release_tag_and_its_commit():
    tag, commit = pin()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag) and re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit in (UPSTREAM / "README.md").read_text()  # the vendored parser is from the pin


@pytest.mark.parametrize("mode", ["--lint", "--validate"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda p: p.name)
def test_layers_pass_the_pinned_metadata_parser(layer, mode):
    result = metadata(mode, layer)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parser_refuses_a_broken_layer(tmp_path):
    # Positive control: a misspelt attribute and a short version are refused.
    text = LAYERS[0].read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(re.sub(r"X-Env-Layer-Version: \S+", "X-Env-Layer-Version: 0.2", text)
                      .replace("hid_scanner-Valid:", "hid_scanner-Vald:"))
    result = metadata("--lint", broken)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'X-Env-Var-hid_scanner-Vald' is not supported" in out and "not major.minor.patch" in out


def test_image_asset_dir_has_upstreams_hook_names():
    asset = RIG / "image/clinicam"
    hook = asset / "pre-image.sh"
    assert hook.stat().st_mode & stat.S_IXUSR  # the runner ignores a non-executable hook
    assert "X-Env-Var-assetdir: ${DIRECTORY}" in (asset / "clinicam-image.yaml").read_text()
    assert not list(RIG.rglob("*.d/hooks"))  # no convention rpi-image-gen does not have


def test_pre_image_leaves_a_genimage_cfg(tmp_path):
    rootfs, outdir = tmp_path / "rootfs", tmp_path / "out"
    (rootfs / "var/lib/clinicam").mkdir(parents=True)
    env = {**os.environ, "IGconf_image_name": "clinicam-station", "IGconf_image_suffix": "img",
           "IGconf_image_boot_part_size": "256M", "IGconf_image_root_part_size": "150%",
           "IGconf_image_data_part_size": "64M"}
    asset = RIG / "image/clinicam"
    # As bin/runner's runhook does: env -C <dir> ./pre-image.sh ROOTFS OUTPUTDIR
    subprocess.run(["./pre-image.sh", str(rootfs), str(outdir)], cwd=asset, env=env, check=True, timeout=30)
    cfgs = sorted(outdir.glob("genimage*.cfg"))
    assert [c.name for c in cfgs] == ["genimage.cfg"]
    text = cfgs[0].read_text()
    assert "@" not in text.replace("@107d", "")  # every placeholder filled
    assert "image clinicam-station.img {" in text
    assert set(re.findall(r'label = "([^"]+)"', text)) >= {"bootfs", "rootfs", "clinicam"}
    assert str(asset / "bootfs-fixup.sh") in text


def test_pre_image_refuses_a_root_without_customize(tmp_path):
    result = subprocess.run(["./pre-image.sh", str(tmp_path), str(tmp_path / "out")], cwd=RIG / "image/clinicam",
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "customize.sh did not run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_boot_slots_have_the_size_update_bundles_are_made_for():
    """bundle.sh's boot.vfat is written raw into boot-a/boot-b: the layout's fixed slot
    size and bundle.sh's default --boot-size must agree, and both slots use it."""
    meta = (RIG / "image/clinicam/clinicam-image.yaml").read_text()
    size = re.search(r"^# X-Env-Var-boot_part_size: (\d+)M$", meta, re.M)
    bundle = re.search(r"boot_size=(\d+)", (IMAGE_BUILD / "bundle.sh").read_text())
    assert size and bundle and size.group(1) == bundle.group(1)
    cfg = (RIG / "image/clinicam/genimage.cfg.in").read_text()
    for slot in ("boot-a", "boot-b"):
        body = re.search(rf"image {slot}\.vfat \{{(.*?)\n\}}", cfg, re.S)
        assert body and "size = @BOOT_SIZE@" in body.group(1)
    # The partitions RAUC's system config names are the layout's.
    conf = (IMAGE_BUILD / "update/system-pi4.conf").read_text()
    for part in ("boot-a", "boot-b", "rootfs-a", "rootfs-b"):
        assert f"partition {part} {{" in cfg and f"device=/dev/disk/by-partlabel/{part}" in conf
