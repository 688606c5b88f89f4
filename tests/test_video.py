"""Video parsing: label PNGs per (k-th) frame, the overlay video at the source's rate, temporal smoothing and its
flicker measure, and bad files reported like bad images."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

import hparse  # noqa: E402
from hparse.engine.video import (  # noqa: E402
    TemporalSmoother,
    flicker,
    is_video_file,
    parse_video,
    write_pan_clip,
)
from hparse.errors import DataError, HParseError  # noqa: E402
from hparse.io.image import read_label  # noqa: E402
from hparse.labels import get_meta  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """One second at 10 frames/s, 192 px wide: the example photos panned slowly."""
    return write_pan_clip(EXAMPLES, tmp_path_factory.mktemp("clip") / "pan.mp4", seconds=1.0, fps=10, width=192)


@pytest.fixture(scope="module")
def parser():
    return hparse.load("default")


def decoded_frames(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(stream)], stream.average_rate


def test_is_video_file():
    assert is_video_file("a/clip.MP4") and is_video_file("x.mov") and is_video_file("y.webm")
    assert not is_video_file("photo.jpg") and not is_video_file("labels.png") and not is_video_file("notes")


def test_parse_video_writes_labels_and_an_overlay_at_the_source_rate(clip, parser, tmp_path):
    frames, rate = decoded_frames(clip)
    rep = parse_video(parser, clip, tmp_path, progress=False)
    assert (rep.frames, rep.parsed, rep.fps) == (10, 10, 10.0)
    pngs = sorted((tmp_path / "pan").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(10)]
    for i in (0, 7):                                      # class ids, equal to the parser's on the same frame
        np.testing.assert_array_equal(read_label(pngs[i]), parser.predict(frames[i]))
    out_frames, out_rate = decoded_frames(Path(rep.overlay_video))
    assert len(out_frames) == 10 and out_rate == rate
    assert out_frames[0].shape[0] == frames[0].shape[0] and out_frames[0].shape[1] > frames[0].shape[1]  # legend
    assert len(rep.flicker_per_frame) == 9 and 0 <= rep.flicker < 1
    assert (tmp_path / "pan_video.json").is_file()


def test_every_kth_frame_and_no_overlay(clip, parser, tmp_path):
    rep = parse_video(parser, clip, tmp_path, every=3, overlay_video=False, progress=False)
    assert rep.parsed == 4 and rep.frames == 10 and rep.overlay_video is None
    assert sorted(p.name for p in (tmp_path / "pan").glob("*.png")) == [f"{i:06d}.png" for i in (0, 3, 6, 9)]


class NoisyParser:
    """Two classes at 50/50 with fresh noise every frame: the labels flicker unless smoothed."""

    meta = get_meta("pascal_person_part")
    classes = meta.classes

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def predict(self, image, return_probs: bool = False):
        h, w = image.shape[:2]
        p1 = np.clip(0.5 + self.rng.normal(0, 0.2, (h, w)), 0, 1).astype(np.float32)
        probs = np.zeros((len(self.classes), h, w), np.float32)
        probs[1], probs[2] = p1, 1 - p1
        label = probs.argmax(0).astype(np.uint8)
        return (label, probs) if return_probs else label


def test_smoothing_reduces_flicker(clip, tmp_path):
    raw = parse_video(NoisyParser(), clip, tmp_path / "raw", overlay_video=False, progress=False)
    smooth = parse_video(NoisyParser(), clip, tmp_path / "smooth", smooth=0.8, overlay_video=False, progress=False)
    assert raw.flicker > 0.4
    assert smooth.flicker < raw.flicker / 2


def test_temporal_smoother_and_flicker():
    s = TemporalSmoother(0.5)
    a, b = np.ones((2, 1, 1), np.float32), np.zeros((2, 1, 1), np.float32)
    assert s(a)[0, 0, 0] == 1.0 and s(b)[0, 0, 0] == 0.5 and s(b)[0, 0, 0] == 0.25
    assert s(np.zeros((2, 3, 3), np.float32)).shape == (2, 3, 3)       # a new size restarts it
    assert flicker(np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 0]])) == 0.25
    with pytest.raises(HParseError, match="smooth"):
        TemporalSmoother(1.0)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 50, None])
def test_bad_videos_are_reported_naming_the_file(clip, parser, tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(clip.read_bytes()[:600] if content is None else content)
    with pytest.raises(DataError, match="bad.mp4"):
        parse_video(parser, bad, tmp_path / "out", progress=False)


def test_missing_video_and_bad_every(parser, tmp_path):
    with pytest.raises(DataError, match="missing.mp4: file not found"):
        parse_video(parser, tmp_path / "missing.mp4", tmp_path, progress=False)
    with pytest.raises(HParseError, match="every"):
        parse_video(parser, tmp_path / "missing.mp4", tmp_path, every=0, progress=False)


@pytest.mark.slow
def test_smoothing_reduces_flicker_on_the_five_second_pan(parser, tmp_path):
    clip = write_pan_clip(EXAMPLES, tmp_path / "pan.mp4")
    raw = parse_video(parser, clip, tmp_path / "raw", overlay_video=False, progress=False)
    smooth = parse_video(parser, clip, tmp_path / "smooth", smooth=0.6, overlay_video=False, progress=False)
    assert smooth.flicker < raw.flicker


def test_hparse_parse_takes_a_video_beside_photos_and_reports_a_broken_one(clip, tmp_path):
    from typer.testing import CliRunner

    from hparse.cli import app

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:300])
    res = CliRunner().invoke(app, ["parse", str(clip), str(EXAMPLES[0]), str(broken), "--out", str(tmp_path / "o"),
                                   "--every", "5", "--smooth", "0.5", "--backend", "torch"])
    assert res.exit_code == 1, res.output
    assert "broken.mp4" in res.output and "2 parsed" in res.output
    assert sorted(p.name for p in (tmp_path / "o" / "pan").glob("*.png")) == ["000000.png", "000005.png"]
    assert (tmp_path / "o" / "pan_overlay.mp4").is_file()
    assert (tmp_path / "o" / f"{EXAMPLES[0].stem}.png").is_file()


def test_smoothing_reduces_flicker_of_the_shipped_model(clip, parser, tmp_path):
    raw = parse_video(parser, clip, tmp_path / "raw", overlay_video=False, progress=False)
    smooth = parse_video(parser, clip, tmp_path / "smooth", smooth=0.6, overlay_video=False, progress=False)
    assert smooth.flicker < raw.flicker / 2
