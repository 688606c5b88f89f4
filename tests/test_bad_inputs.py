"""Issue #21: a corpus of malformed inputs, each run through the entry point a user would use (``hparse
parse`` / ``eval`` / ``evaluate`` / ``train`` / ``export`` through typer's CliRunner or a subprocess,
``hparse.load``), asserting a clear outcome: a message naming the file and the cause, the other inputs still
processed, no partial or clobbered file, the documented exit code (parse: 0 all done, 1 some failed, 2 usage).

Every case is generated here (no fixtures on disk). The model is a tiny untrained CE2P saved as a checkpoint
(no training run); subprocesses killed or raced mid-run take a few seconds each.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import hparse
from hparse import config as C
from hparse.cli import app
from hparse.errors import HParseError
from hparse.io.atomic import TEMP_NAME
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.structures import PersonInstances

from .test_engine import make_folder_dataset, tiny_config

runner = CliRunner()
META = get_meta("pascal_person_part")
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ helpers

def save_checkpoint(path: Path, root: Path, seed: int = 0, nan: bool = False, **entries) -> Path:
    """A tiny untrained CE2P checkpoint for the pascal_person_part label set (``entries`` override keys;
    a value None removes the key)."""
    cfg = tiny_config(root)
    torch.manual_seed(seed)
    state = build_model(cfg["model"], META).state_dict()
    if nan:
        next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    ck = {"model": state, "config": cfg, "label_set": META.name, **entries}
    torch.save({k: v for k, v in ck.items() if v is not None}, path)
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"), n=4)


@pytest.fixture(scope="module")
def ckpt(data_root, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt", data_root)


def photo(path: Path, size=(40, 30), seed: int = 0, fmt: str | None = None) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format=fmt)
    return path


def parse(*args, model: Path, env: dict | None = None):
    return runner.invoke(app, ["parse", "--model", str(model), "--device", "cpu", *map(str, args)], env=env)


def assert_clean(folder: Path) -> None:
    """No temporary file, and every output under a final name is whole (decodes / parses)."""
    for p in folder.rglob("*"):
        assert not TEMP_NAME.match(p.name), f"temporary file left: {p}"
        if p.is_dir():
            continue
        if p.suffix in (".png", ".jpg"):
            with Image.open(p) as im:
                im.load()
        elif p.suffix == ".npy":
            np.load(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())


def label_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if "_masks" not in p.parent.name)


def png_with_header_size(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels (RGB) with almost no data: cheap to make, huge to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------- images: one odd file beside a good one

def _corrupt_jpeg(p):
    p.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(300))


def _truncated_png(p):
    full = p.with_name("full.tmpdata")
    photo(full, (60, 50), fmt="PNG")
    p.write_bytes(full.read_bytes()[:200])
    full.unlink()


def _float_tiff(p, special=False):
    a = np.random.default_rng(2).normal(size=(30, 20)).astype(np.float32)
    if special:
        a[0, 0], a[1, 1], a[2, 2] = np.nan, np.inf, -np.inf
    Image.fromarray(a, mode="F").save(p)


def _multipage_tiff(p):
    frames = [Image.fromarray(np.full((20, 16, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(p, save_all=True, append_images=frames[1:])


def _cmyk_jpeg(p):
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 18, 3), np.uint8)).convert("CMYK").save(p)


ODD_IMAGES = {
    # name: (file name, writer, parseable, message part, output size (H, W) when parseable)
    "corrupt_jpeg": ("odd.jpg", _corrupt_jpeg, False, "not a readable image", None),
    "text_named_jpg": ("odd.jpg", lambda p: p.write_text("not an image\n"), False, "not a readable image", None),
    "zero_bytes_png": ("odd.png", lambda p: p.write_bytes(b""), False, "not a readable image", None),
    "truncated_png": ("odd.png", _truncated_png, False, "not a readable image", None),
    "float32_tiff": ("odd.tif", _float_tiff, True, None, (30, 20)),
    "float32_tiff_nan_inf": ("odd.tiff", lambda p: _float_tiff(p, special=True), True, None, (30, 20)),
    "uint16_png": ("odd.png", lambda p: Image.fromarray(
        np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).save(p), True, None, (20, 30)),
    "bilevel_png": ("odd.png", lambda p: Image.fromarray(np.eye(16, dtype=bool)).save(p), True, None, (16, 16)),
    "cmyk_jpeg": ("odd.jpg", _cmyk_jpeg, True, None, (24, 18)),
    "multipage_tiff": ("odd.tif", _multipage_tiff, True, None, (20, 16)),
    "one_pixel": ("odd.png", lambda p: photo(p, (1, 1)), True, None, (1, 1)),
    "one_by_400": ("odd.png", lambda p: photo(p, (1, 400)), True, None, (1, 400)),
    "156_megapixel_header": ("odd.png", lambda p: png_with_header_size(p, 12500, 12500), False,
                             "100,000,000-pixel limit", None),
    "directory_named_jpg": ("odd.jpg", lambda p: (p.mkdir(), photo(p / "inner.png")), True, None, (40, 30)),
}


@pytest.mark.parametrize("case", ODD_IMAGES, ids=list(ODD_IMAGES))
def test_odd_image_beside_a_good_one(case, ckpt, tmp_path):
    name, make, parseable, message, size = ODD_IMAGES[case]
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "good.png")
    make(src / name)
    res = parse(src, "--out", out, model=ckpt)
    assert (out / "good.png").is_file() and (out / "good_overlay.jpg").is_file(), res.output
    if parseable:
        assert res.exit_code == 0, res.output
        label = next(p for p in out.rglob("*.png") if p.name != "good.png")
        assert np.asarray(Image.open(label)).shape == size
    else:
        assert res.exit_code == 1, res.output
        assert f"{src / name}: " in res.output and message in res.output and "1 failed" in res.output
        assert not (out / "odd.png").exists()
    assert_clean(out)


# ------------------------------------------------------------------------------------------ parse: inputs

def test_pixel_limit_from_environment(ckpt, tmp_path):
    photo(tmp_path / "a.png", (20, 20))
    res = parse(tmp_path / "a.png", "--out", tmp_path / "o", model=ckpt, env={"HPARSE_MAX_PIXELS": "100"})
    assert res.exit_code == 1 and "a.png: 20x20 image" in res.output and "HPARSE_MAX_PIXELS" in res.output
    res = parse(tmp_path / "a.png", "--out", tmp_path / "o", model=ckpt, env={"HPARSE_MAX_PIXELS": "lots"})
    assert res.exit_code == 2 and "HPARSE_MAX_PIXELS='lots'" in res.output
    res = parse(tmp_path / "a.png", "--out", tmp_path / "o", model=ckpt, env={"HPARSE_MAX_PIXELS": "1_000"})
    assert res.exit_code == 0, res.output


def test_broken_symlink_given_by_name_is_reported(ckpt, tmp_path):
    good = photo(tmp_path / "good.png")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    res = parse(good, tmp_path / "gone.jpg", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 1 and "1 parsed" in res.output and "1 failed" in res.output
    assert f"{tmp_path / 'gone.jpg'}: broken symbolic link" in res.output and "deleted.jpg" in res.output


def test_broken_symlink_inside_a_folder_is_reported(ckpt, tmp_path):
    src = tmp_path / "in"
    photo(src / "good.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    res = parse(src, "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 1 and "gone.png: broken symbolic link" in res.output


def test_missing_input_among_good_ones(ckpt, tmp_path):
    good = photo(tmp_path / "good.png")
    res = parse(good, tmp_path / "typo.png", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 1 and "1 parsed" in res.output
    assert f"{tmp_path / 'typo.png'}: no such file, folder or matching glob" in res.output


def test_nothing_to_parse_is_a_usage_error(ckpt, tmp_path):
    (tmp_path / "empty").mkdir()
    res = parse(tmp_path / "empty", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 2 and "nothing to parse" in res.output and "no image files" in res.output
    res = parse(tmp_path / "missing*.png", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 2 and "no such file" in res.output


def test_same_file_twice_is_parsed_once(ckpt, tmp_path):
    src = tmp_path / "in"
    a = photo(src / "a.png")
    (tmp_path / "alias.png").symlink_to(a)
    res = parse(a, src, str(src / "*.png"), tmp_path / "alias.png", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 0 and "1 parsed, 0 skipped" in res.output, res.output
    assert label_files(tmp_path / "o") == ["a.png"]


def test_colliding_stems_get_distinct_stable_names(ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    a_jpg, a_png, a1 = photo(src / "a.jpg", seed=1), photo(src / "a.png", seed=2), photo(src / "a_1.jpg", seed=3)
    res = parse(src, "--out", out, model=ckpt)
    assert res.exit_code == 0 and "3 parsed" in res.output, res.output
    assert label_files(out) == ["a.jpg.png", "a.png.png", "a_1.png"]
    inputs = {json.loads(Image.open(out / n).text["hparse"])["input"] for n in label_files(out)}
    assert inputs == {str(a_jpg), str(a_png), str(a1)}
    res = parse(src, "--out", out, model=ckpt)      # the same names again: all skipped, none clobbered
    assert res.exit_code == 0 and "0 parsed, 3 skipped" in res.output


def test_same_name_in_two_input_folders(ckpt, tmp_path):
    photo(tmp_path / "x" / "a.jpg", seed=1)
    photo(tmp_path / "y" / "a.jpg", seed=2)
    res = parse(tmp_path / "x", tmp_path / "y", "--out", tmp_path / "o", model=ckpt)
    assert res.exit_code == 0 and "2 parsed" in res.output
    assert label_files(tmp_path / "o") == ["a.jpg.png", "a.jpg_2.png"]


def test_out_equal_to_input_folder_is_refused(ckpt, tmp_path):
    src = tmp_path / "in"
    before = {p.name: p.read_bytes() for p in (photo(src / "a.png"), photo(src / "b.png", seed=1))}
    res = parse(src, "--out", src, "--overwrite", model=ckpt)
    assert res.exit_code == 2 and "is the input folder" in res.output
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_output_replacing_an_input_file_is_refused(ckpt, tmp_path):
    a = photo(tmp_path / "out" / "a.png")
    data = a.read_bytes()
    res = parse(a, "--out", tmp_path / "out", "--overwrite", model=ckpt)
    assert res.exit_code == 2 and "would replace the input" in res.output and a.read_bytes() == data


def test_out_inside_the_input_folder_is_not_read_back(ckpt, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.png")
    photo(src / "b.jpg", seed=1)
    for _ in range(2):
        res = parse(src, "--out", src / "parsed", model=ckpt)
        assert res.exit_code == 0 and "failed" in res.output and " 0 failed" in res.output
    assert "0 parsed, 2 skipped" in res.output        # not 2 + the outputs of the first run
    res = parse(str(src / "**" / "*.jpg"), "--out", src / "parsed", model=ckpt)
    assert res.exit_code == 0 and "1 skipped" in res.output and "0 parsed" in res.output


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--png-mode", "jpeg"], "--png-mode must be one of palette, gray"),
    (["--probs-format", "f64"], "--probs-format must be one of f16, u8"),
    (["--probs-size", "huge"], "--probs-size must be one of image, network"),
    (["--device", "quantum"], "quantum"),
    (["--palette", "rainbow"], "unknown palette"),
], ids=["batch_size_0", "png_mode", "probs_format", "probs_size", "device", "palette"])
def test_parse_option_mistakes(args, message, ckpt, tmp_path):
    photo(tmp_path / "a.png")
    res = parse(tmp_path / "a.png", "--out", tmp_path / "o", *args, model=ckpt)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_and_no_inputs(ckpt, tmp_path):
    photo(tmp_path / "a.png")
    (tmp_path / "f").write_text("x")
    res = parse(tmp_path / "a.png", "--out", tmp_path / "f", model=ckpt)
    assert res.exit_code == 2 and "is an existing file" in res.output
    res = runner.invoke(app, ["parse"])
    assert res.exit_code == 2 and "Missing argument" in res.output


# -------------------------------------------------------------------------------- parse: outputs and reruns

def test_png_mode_gray_and_probs_u8(ckpt, tmp_path):
    a = photo(tmp_path / "a.png")
    assert parse(a, "--out", tmp_path / "p", "--probs", model=ckpt).exit_code == 0
    res = parse(a, "--out", tmp_path / "g", "--png-mode", "gray", "--probs", "--probs-format", "u8", model=ckpt)
    assert res.exit_code == 0, res.output
    pal, gray = Image.open(tmp_path / "p" / "a.png"), Image.open(tmp_path / "g" / "a.png")
    assert pal.mode == "P" and gray.mode == "L" and np.array_equal(np.asarray(pal), np.asarray(gray))
    f16, u8 = np.load(tmp_path / "p" / "a_probs.npy"), np.load(tmp_path / "g" / "a_probs.npy")
    assert f16.dtype == np.float16 and u8.dtype == np.uint8 and f16.shape == (7, 40, 30)
    assert np.abs(np.round(f16.astype(np.float32) * 255) - u8).max() <= 1
    res = parse(a, "--out", tmp_path / "p", "--probs", "--probs-size", "network", model=ckpt)
    assert "1 parsed" in res.output                                     # another probs size: redone
    assert np.load(tmp_path / "p" / "a_probs.npy").shape == (7, 12, 9)  # output grid (stride 4) of a 48 px long side


def test_rerun_redoes_what_options_or_model_change(ckpt, data_root, tmp_path):
    a, out = photo(tmp_path / "a.png"), tmp_path / "out"
    assert "1 parsed" in parse(a, "--out", out, model=ckpt).output
    assert "1 skipped" in parse(a, "--out", out, model=ckpt).output
    assert "1 parsed" in parse(a, "--out", out, "--masks", model=ckpt).output          # new kind asked for
    assert "1 skipped" in parse(a, "--out", out, model=ckpt).output                    # a subset: done
    assert "1 parsed" in parse(a, "--out", out, "--png-mode", "gray", model=ckpt).output
    other = save_checkpoint(tmp_path / "other.pt", data_root, seed=1)
    assert "1 parsed" in parse(a, "--out", out, "--png-mode", "gray", model=other).output  # another model
    (out / "a_overlay.jpg").unlink()
    assert "1 parsed" in parse(a, "--out", out, "--png-mode", "gray", model=other).output  # an output lost
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "1 parsed" in parse(a, "--out", out, "--png-mode", "gray", model=other).output  # the input changed
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(out / "a.png")                   # no record: redo
    assert "1 parsed" in parse(a, "--out", out, "--png-mode", "gray", model=other).output
    assert_clean(out)


def test_killed_between_outputs_is_completed_by_a_rerun(ckpt, tmp_path):
    """The label PNG (with the record) is written last: an image whose label is missing or whose overlay
    is missing is redone; stale hidden temporary files of the killed run are removed."""
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        photo(src / f"{i}.png", seed=i)
    assert parse(src, "--out", out, model=ckpt).exit_code == 0
    (out / "1_overlay.jpg").unlink()                   # killed after the label of 1 ... (old order)
    (out / "2.png").unlink()                           # ... or before the label of 2
    stale = out / ".0_overlay.jpg.abcd1234.tmp.jpg"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    fresh = out / ".0.png.zzzz9999.tmp.png"            # a concurrent run's temporary file: newer than this run
    fresh.write_bytes(b"")
    os.utime(fresh, (time.time() + 3600, time.time() + 3600))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = out / f".1.png.{int(gone.stdout)}-dead0000.tmp.png"   # its writer's process is over
    live = out / f".1.png.{os.getppid()}-live0000.tmp.png"       # a live process's write in progress
    for p in (dead, live):
        p.write_bytes(b"\x89PNG")
        os.utime(p, (time.time() - 60, time.time() - 60))
    res = parse(src, "--out", out, model=ckpt)
    assert res.exit_code == 0 and "2 parsed, 1 skipped" in res.output, res.output
    assert not stale.exists() and not dead.exists() and fresh.exists() and live.exists()
    fresh.unlink()
    live.unlink()
    assert_clean(out)


def _full_disk(monkeypatch, budget: int) -> None:
    """``os.write`` as on a disk with ``budget`` bytes free: a short write, then ENOSPC."""
    real, left = os.write, [budget]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_full_disk_fails_each_image_by_name_and_a_rerun_completes(ckpt, tmp_path, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        photo(src / f"{i}.png", size=(60, 45), seed=i)
    _full_disk(monkeypatch, 2500)                      # room for one image's outputs at most
    res = parse(src, "--out", out, model=ckpt)
    monkeypatch.undo()
    assert res.exit_code == 1, res.output
    failed = [ln for ln in res.output.splitlines() if ln.startswith("  failed:")]
    assert len(failed) >= 3 and all("No space left on device" in ln for ln in failed)
    assert f"{4 - len(failed)} parsed, 0 skipped" in res.output
    assert all(f"{src}/" in ln for ln in failed)
    assert_clean(out)                                  # whatever is there is whole, no temporary file
    res = parse(src, "--out", out, model=ckpt)
    assert res.exit_code == 0 and f"{len(failed)} parsed" in res.output, res.output
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i}.png" for i in range(4)]
    assert_clean(out)


KILL_SCRIPT = """
import os, sys
import hparse.io.atomic as atomic
calls, real = [0], os.write
def write(fd, data):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        real(fd, bytes(data[: len(data) // 2]))
        os._exit(137)                                  # killed mid-write: no cleanup runs
    return real(fd, data)
atomic.os.write = write
from hparse.cli import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("kill_at", [2, 5])
def test_parse_killed_mid_write_then_rerun_completes(kill_at, ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        photo(src / f"{i}.png", seed=i)
    args = ["parse", str(src), "--out", str(out), "--model", str(ckpt), "--device", "cpu", "--masks"]
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(kill_at), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 137, proc.stderr
    assert any(TEMP_NAME.match(p.name) for p in out.rglob("*")), "the kill should leave a temporary file"
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and " 0 failed" in res.output, res.output
    assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "1.png", "2.png"]
    assert all((out / f"{i}_overlay.jpg").is_file() for i in range(3))
    assert_clean(out)


def _limit_file_size(limit: int):
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_in_a_subprocess(ckpt, tmp_path):
    """RLIMIT_FSIZE: every overlay is too big to write; each image fails by name, exit 1, nothing partial."""
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        photo(src / f"{i}.png", size=(120, 90), seed=i)
    cmd = [sys.executable, "-m", "hparse", "parse", str(src), "--out", str(out), "--model", str(ckpt),
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                          preexec_fn=_limit_file_size(4000))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("failed:") == 3 and "File too large" in proc.stderr
    assert_clean(out)
    assert not list(out.glob("*.png"))                   # no label without its overlay
    assert subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=120).returncode == 0
    assert_clean(out)


def test_two_concurrent_runs_into_one_folder(ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        photo(src / f"{i}.png", size=(80, 60), seed=i)
    cmd = [sys.executable, "-m", "hparse", "parse", str(src), "--out", str(out), "--model", str(ckpt),
           "--device", "cpu", "--overwrite", "--masks", "--probs"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i}.png" for i in range(6)]
    assert_clean(out)


# ------------------------------------------------------------------------------------ datasets and lists

def pascal_dataset(root: Path, ids: list[str], lists: dict[str, list[str]], size=(24, 16)) -> Path:
    """A pascal_person_part layout: JPEGImages/<id>.jpg, SegmentationPart/<id>.png and <split>_id.txt."""
    for i, k in enumerate(ids):
        photo(root / "JPEGImages" / f"{k}.jpg", size, seed=i)
        label = np.zeros(size, np.uint8)
        label[4:12, 4:10] = 1 + i % 6
        (root / "SegmentationPart").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(root / "SegmentationPart" / f"{k}.png")
    for split, names in lists.items():
        (root / f"{split}_id.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def ground_truth_predictions(root: Path, ids: list[str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for k in ids:
        (out / f"{k}.png").write_bytes((root / "SegmentationPart" / f"{k}.png").read_bytes())
    return out


def evaluate(pred: Path, root: Path, *args):
    return runner.invoke(app, ["evaluate", "--pred", str(pred), "--data", "pascal_person_part", str(root), *args])


def test_split_list_repeating_an_id_scores_it_once(tmp_path, caplog):
    root = pascal_dataset(tmp_path / "d", ["a", "b"], {"val": ["a", "a", "b", "a"]})
    pred = ground_truth_predictions(root, ["a", "b"], tmp_path / "pred")
    with caplog.at_level(logging.WARNING):
        res = evaluate(pred, root, "--split", "val")
    assert res.exit_code == 0 and "2 images" in res.output, res.output
    warnings = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert len(warnings) == 1 and "val_id.txt" in warnings[0] and "'a' x3" in warnings[0]


def test_evaluate_accepts_any_listed_split(tmp_path):
    root = pascal_dataset(tmp_path / "d", ["a", "b", "c"], {"val": ["a"], "test": ["b", "c"]})
    pred = ground_truth_predictions(root, ["a", "b", "c"], tmp_path / "pred")
    res = evaluate(pred, root, "--split", "test")
    assert res.exit_code == 0 and "test: 2 images, 0 without prediction" in res.output, res.output
    res = evaluate(pred, root, "--split", "holdout")
    assert res.exit_code == 2 and "unknown split 'holdout'" in res.output and "holdout_id.txt" in res.output
    res = evaluate(pred, root, "--split", "../val")
    assert res.exit_code == 2 and "unknown split" in res.output


def test_dataset_image_that_is_a_broken_symlink(tmp_path):
    root = pascal_dataset(tmp_path / "d", ["a", "b"], {"val": ["a", "b"]})
    (root / "JPEGImages" / "b.jpg").unlink()
    (root / "JPEGImages" / "b.jpg").symlink_to(tmp_path / "gone.jpg")
    res = evaluate(tmp_path, root, "--split", "val")
    assert res.exit_code == 2 and "b.jpg (broken symbolic link)" in res.output


def test_split_list_naming_a_missing_file(tmp_path):
    root = pascal_dataset(tmp_path / "d", ["a"], {"val": ["a", "ghost"]})
    res = evaluate(tmp_path, root, "--split", "val")
    assert res.exit_code == 2 and "2 file(s) of split 'val' not found" in res.output and "ghost.jpg" in res.output


def test_prediction_with_class_ids_outside_the_label_set(tmp_path):
    root = pascal_dataset(tmp_path / "d", ["a", "b"], {"val": ["a", "b"]})
    pred = ground_truth_predictions(root, ["a", "b"], tmp_path / "pred")
    bad = np.asarray(Image.open(pred / "b.png")).copy()
    bad[0, :3] = [7, 40, 255]
    Image.fromarray(bad).save(pred / "b.png")
    res = evaluate(pred, root, "--split", "val")
    assert res.exit_code == 0, res.output
    assert f"{pred / 'b.png'}: class ids [7, 40, 255] outside pascal_person_part (0..6)" in res.output
    assert "a.png" not in res.output.split("class ids")[0].splitlines()[-1]


def test_prediction_of_the_wrong_size_and_missing_folder(tmp_path):
    root = pascal_dataset(tmp_path / "d", ["a"], {"val": ["a"]})
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred / "a.png")
    res = evaluate(pred, root, "--split", "val")
    assert res.exit_code == 2 and "a.png: prediction is 5x5" in res.output
    res = evaluate(tmp_path / "nope", root)
    assert res.exit_code == 2 and "no such folder" in res.output


def test_instance_prediction_files_malformed(tmp_path):
    from hparse.io import instance_outputs as io

    root = tmp_path / "cihp"
    (root / "Images").mkdir(parents=True)
    (root / "Category_ids").mkdir()
    (root / "Human_ids").mkdir()
    photo(root / "Images" / "x.jpg", (12, 10))
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "Category_ids" / "x.png")
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "Human_ids" / "x.png")
    pred = tmp_path / "pred"
    (pred / io.PERSONS).mkdir(parents=True)
    (pred / io.PERSONS / "x.txt").write_text("0.9 1 2\n")
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--data", "cihp", str(root), "--split", "val",
                              "--labels", "cihp"])
    assert res.exit_code == 2 and "x.txt: line 1 has 3 values" in res.output


def test_eval_when_every_sample_is_unreadable(ckpt, tmp_path):
    root = make_folder_dataset(tmp_path / "d", n=4)
    for p in (root / "images").iterdir():
        p.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(C.dump(tiny_config(root)))
    res = runner.invoke(app, ["eval", str(cfg), str(ckpt), "--split", "val"])
    assert res.exit_code == 1 and "none of the 2 samples" in res.output and "could be read" in res.output


# --------------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("entries, message", [
    ({"nan": True}, "weights contain NaN or infinity"),
    ({"label_set": None}, "names no label set"),
    ({"label_set": "klingon"}, "klingon"),
    ({"config": None}, "not an hparse checkpoint"),
], ids=["nan_weights", "no_label_set", "unknown_label_set", "no_config"])
def test_bad_checkpoint(entries, message, data_root, tmp_path):
    path = save_checkpoint(tmp_path / "bad.pt", data_root, **entries)
    with pytest.raises(HParseError, match=message):
        hparse.load(path, device="cpu")
    photo(tmp_path / "a.png")
    res = parse(tmp_path / "a.png", "--out", tmp_path / "o", model=path)
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", ["random_bytes", "truncated", "other_shapes"])
def test_damaged_checkpoint_file(damage, ckpt, data_root, tmp_path):
    path = tmp_path / "bad.pt"
    if damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "truncated":
        path.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        ck = torch.load(ckpt, weights_only=True)
        ck["model"] = {k: torch.zeros(3, *v.shape[1:]) if v.dim() else v for k, v in ck["model"].items()}
        torch.save(ck, path)
    with pytest.raises(HParseError, match=str(path)):
        hparse.load(path, device="cpu")
    with pytest.raises(HParseError, match="neither a shipped model"):
        hparse.load(tmp_path / "missing.pt", device="cpu")


# ----------------------------------------------------------------------------------------- train and export

def test_no_auto_resume_refuses_a_finished_run(ckpt, data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_config(data_root)
    save_checkpoint(run / "last.pt", data_root, epoch=2, config=cfg)
    before = (run / "last.pt").read_bytes()
    (tmp_path / "tiny.yaml").write_text(C.dump(cfg))
    res = runner.invoke(app, ["train", str(tmp_path / "tiny.yaml"), "--out", str(run), "--no-auto-resume"])
    assert res.exit_code != 0 and "holds a run (epoch 2 of 2)" in res.output
    assert (run / "last.pt").read_bytes() == before


def test_checkpoint_write_on_a_full_disk(data_root, tmp_path, monkeypatch):
    from hparse.engine import trainer as T

    tr = T.Trainer(tiny_config(data_root), tmp_path / "run", device="cpu", progress=False)
    tr.out.mkdir()
    last = tr.save("last.pt")
    before = last.read_bytes()

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                           "data/12: file write failed")

    monkeypatch.setattr(T.torch, "save", full)
    with pytest.raises(HParseError) as err:
        tr.save("last.pt")
    assert "cannot write checkpoint" in str(err.value) and "file write failed" in str(err.value)
    assert "\n" not in str(err.value) and last.read_bytes() == before
    assert [p.name for p in tr.out.iterdir()] == ["last.pt"]


def test_stale_checkpoint_temps_and_metrics_after_resume(data_root, tmp_path):
    from hparse.engine.hooks import ValidationHook

    run = tmp_path / "run"
    run.mkdir()
    rec = {"epoch": 1, "step": 2, "miou": 0.1}
    (run / "metrics.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({"epoch": 2, "step": 4}) + "\n")
    hook = ValidationHook(None, [], "semantic/miou", 1)
    hook.before_train(SimpleNamespace(out=run, history=[rec], rank=0))
    assert [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()] == [rec]
    from hparse.io.atomic import remove_stale_temps

    stale = run / ".last.pt.k2j4h5g6.tmp.pt"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 5, time.time() - 5))
    assert remove_stale_temps(run, time.time(), recursive=False) == [stale]


def test_export_onto_a_folder_or_into_a_missing_one(ckpt, tmp_path):
    (tmp_path / "dir").mkdir()
    res = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "dir")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and str(tmp_path / "dir") in res.output
    res = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "new" / "slim.pt")])
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "missing.pt" in res.output


def test_config_file_that_is_not_yaml(ckpt, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    res = runner.invoke(app, ["train", str(bad)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1 and "bad.yaml" in res.output
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(bad.read_text())


# ------------------------------------------------------------------------------------------ interoperability

def test_challenge_folders_in_gray_and_the_mhp_layout(tmp_path):
    from hparse.io import instance_outputs as io

    parsings = np.zeros((2, 12, 16), np.uint8)
    parsings[0, 2:10, 1:7], parsings[1, 3:11, 6:15] = 3, 5       # person 1 partly behind person 2
    persons = PersonInstances((12, 16), np.array([[1, 2, 7, 10], [6, 3, 15, 11]], np.float32),
                              np.array([0.4, 0.9]), parsings)
    io.write_instance_outputs(tmp_path / "pal", "im", persons, META)
    io.write_instance_outputs(tmp_path / "gray", "im", persons, META, png_mode="gray")
    for png in sorted((tmp_path / "pal").rglob("*.png")):
        gray = Image.open(tmp_path / "gray" / png.relative_to(tmp_path / "pal"))
        assert Image.open(png).mode == "P" and gray.mode == "L"
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(gray))
    with pytest.raises(HParseError, match="unknown PNG mode"):
        io.write_instance_outputs(tmp_path / "x", "im", persons, META, png_mode="rgb")
    io.write_mhp_submission(tmp_path / "mhp", {"im": persons})
    seg, tag = (np.asarray(Image.open(tmp_path / "mhp" / f / "im.png")) for f in (io.MHP_SEG, io.MHP_TAG))
    assert Image.open(tmp_path / "mhp" / io.MHP_TAG / "im.png").mode == "L"
    assert (tmp_path / "mhp" / io.MHP_RESULTS).read_text() == "im 1 0.9 2 0.4\n"   # person k: tag value k
    np.testing.assert_array_equal(seg * (tag == 1), parsings[1])                    # the top person whole
    np.testing.assert_array_equal(seg * (tag == 2), parsings[0] * (parsings[1] == 0))
    io.mhp_submission_from_folders(tmp_path / "gray", ["im", "absent"], out=tmp_path / "mhp2")
    assert (tmp_path / "mhp2" / io.MHP_RESULTS).read_text() == "im 1 0.9 2 0.4\n"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mhp2" / io.MHP_TAG / "im.png")), tag)


def test_topdown_gray_pngs_and_mhp_layout(ckpt, tmp_path):
    from hparse.io import instance_outputs as io

    root = tmp_path / "multi"
    for d in ("Images", "Category_ids", "Human_ids"):
        (root / d).mkdir(parents=True)
    photo(root / "Images" / "s0.jpg", (48, 64))
    label, human = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)
    label[5:40, 4:24], human[5:40, 4:24] = 2, 1
    label[8:44, 34:60], human[8:44, 34:60] = 4, 2
    Image.fromarray(label).save(root / "Category_ids" / "s0.png")
    Image.fromarray(human).save(root / "Human_ids" / "s0.png")
    out = tmp_path / "pred"
    res = runner.invoke(app, ["topdown", "--data", "cihp", str(root), "--labels", "pascal_person_part", "--out",
                              str(out), "--model", str(ckpt), "--device", "cpu", "--png-mode", "gray", "--mhp"])
    assert res.exit_code == 0, res.output
    pngs = sorted(out.rglob("*.png"))
    assert pngs and all(Image.open(p).mode == "L" for p in pngs)
    assert {p.parent.name for p in pngs} >= {io.GLOBAL, io.HUMANS, io.MHP_SEG, io.MHP_TAG}
    assert (out / io.MHP_RESULTS).read_text().startswith("s0 1 ")
    res = runner.invoke(app, ["topdown", "--data", "cihp", str(root), "--labels", "pascal_person_part", "--out",
                              str(out), "--model", str(ckpt), "--png-mode", "jpeg"])
    assert res.exit_code == 2 and "--png-mode must be one of" in res.output
