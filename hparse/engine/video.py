"""Parsing videos: a label PNG per (k-th) frame, an overlay video at the source's frame rate, optional
temporal smoothing of the class probabilities, and a flicker measure.

Video input and output go through PyAV (``pip install "hparse[video]"``) rather than OpenCV: its FFmpeg
build encodes H.264 (OpenCV's pip wheel writes only MPEG-4 part 2 here, which browsers do not play), it
keeps the source's exact rational frame rate (30000/1001 stays 30000/1001) and it raises on corrupt data
instead of returning an empty frame, so a bad file is reported like a bad image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError, HParseError
from ..io.atomic import write_text_atomic
from ..io.image import read_image, write_label_png
from ..viz import overlay

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def is_video_file(path) -> bool:
    """Whether ``path`` names a video by its suffix (what ``hparse parse`` sends to :func:`parse_video`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoReport:
    """What :func:`parse_video` did. ``flicker``: mean share of pixels whose class changes between
    consecutive parsed frames (0 = steady labels); ``flicker_per_frame`` has one value per pair."""

    source: str
    frames: int = 0
    parsed: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    smooth: float = 0.0
    every: int = 1
    labels_dir: str = ""
    overlay_video: str | None = None
    seconds: float = 0.0
    flicker: float = 0.0
    flicker_per_frame: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _av():
    try:
        import av
    except ImportError:
        raise HParseError('video input needs PyAV: pip install "hparse[video]"') from None
    return av


def flicker(previous: np.ndarray, label: np.ndarray) -> float:
    """Share of pixels whose class differs between two label maps of the same size."""
    return float(np.mean(np.asarray(previous) != np.asarray(label)))


class TemporalSmoother:
    """Exponential moving average of class probabilities over time: ``p = smooth * p_prev + (1 - smooth) *
    p_now``; ``smooth = 0`` keeps each frame's own probabilities. Restarts when the frame size changes."""

    def __init__(self, smooth: float):
        if not 0.0 <= smooth < 1.0:
            raise HParseError(f"smooth must lie in [0, 1), got {smooth}")
        self.smooth, self.state = smooth, None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        if self.state is None or self.state.shape != probs.shape:
            self.state = probs.astype(np.float32, copy=True)
        else:
            self.state *= self.smooth
            self.state += (1.0 - self.smooth) * probs
        return self.state


@contextmanager
def _open_video(path: Path):
    """The container and its first video stream; unreadable files raise :class:`DataError` naming them."""
    av = _av()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable video ({e.__class__.__name__}: {e})") from e
    try:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _frames(container, stream, path: Path) -> Iterator[np.ndarray]:
    """Decoded frames as HxWx3 uint8 RGB; a decoding error raises :class:`DataError` naming the file."""
    av = _av()
    try:
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: corrupt or unsupported video ({e.__class__.__name__}: {e})") from e


def _frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


class VideoWriter:
    """H.264 (else MPEG-4) video at a given frame rate; the size is taken from the first frame, later
    frames are padded or scaled to it. Odd sizes are padded to even ones (what 4:2:0 colour needs)."""

    def __init__(self, path: Path, rate: Fraction, crf: int = 20):
        self.path, self.rate, self.crf = Path(path), Fraction(rate), crf
        self.container = self.stream = None

    def _open(self, width: int, height: int) -> None:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": str(self.crf), "preset": "veryfast"}

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.container is None:
            self._open(rgb.shape[1], rgb.shape[0])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(width=self.stream.width, height=self.stream.height, format="yuv420p")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FrameParser:
    """One frame -> label map, through the parser and the temporal smoother."""

    def __init__(self, parser, smooth: float):
        self.parser, self.smoother = parser, TemporalSmoother(smooth)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.smoother.smooth == 0.0:
            return self.parser.predict(rgb)
        _, probs = self.parser.predict(rgb, return_probs=True)
        smoothed = self.smoother(probs)
        if getattr(getattr(self.parser, "predictor", None), "prior", None) is not None:   # labels: person first
            import torch

            from .person_prior import person_first
            smoothed = person_first(torch.from_numpy(np.asarray(smoothed, np.float32))).numpy()
        return smoothed.argmax(0).astype(np.uint8)


def parse_video(parser, path, out_dir, every: int = 1, smooth: float = 0.0, palette: str | None = None,
                overlay_video: bool = True, legend: bool = True, max_frames: int | None = None,
                progress: bool = True) -> VideoReport:
    """Parse every ``every``-th frame of the video at ``path`` into ``out_dir``: ``<stem>/<frame:06d>.png``
    (class ids, the palette for viewing), ``<stem>_overlay.mp4`` (every frame at the source's frame rate,
    blended with the latest label map, legend on the right) and ``<stem>_video.json`` (the report).

    ``smooth`` in [0, 1): exponential moving average of the class probabilities over parsed frames (0 = off).
    A corrupt or unsupported file raises :class:`~hparse.errors.DataError` naming it.
    """
    path, out_dir = Path(path), Path(out_dir)
    if every < 1:
        raise HParseError(f"every must be at least 1, got {every}")
    frames = _FrameLoop(parser, _FrameParser(parser, smooth), parser.meta.palette(palette), legend,
                        VideoReport(str(path), smooth=smooth, every=every, labels_dir=str(out_dir / path.stem)))
    start = time.perf_counter()
    with _open_video(path) as (container, stream):
        rate = _frame_rate(stream)
        frames.report.fps = float(rate)
        writer = VideoWriter(out_dir / f"{path.stem}_overlay.mp4", rate) if overlay_video else None
        total = min(n for n in (stream.frames, max_frames) if n) if stream.frames or max_frames else None
        with tqdm(total=total, desc=f"parse {path.name}", unit="frame", disable=not progress) as bar:
            try:
                frames.run(_frames(container, stream, path), writer, max_frames, bar)
            finally:
                if writer is not None:
                    writer.close()
    return _finish(frames.report, path, out_dir, writer, time.perf_counter() - start)


class _FrameLoop:
    """Frames -> label PNGs (every ``report.every``-th), overlay frames and the flicker count, into ``report``."""

    def __init__(self, parser, frame_parser: _FrameParser, palette: np.ndarray, legend: bool, report: VideoReport):
        self.frame_parser, self.palette, self.report = frame_parser, palette, report
        self.classes = parser.classes if legend else None
        self.label: np.ndarray | None = None

    def run(self, frames: Iterator[np.ndarray], writer: VideoWriter | None, max_frames: int | None, bar) -> None:
        for index, rgb in enumerate(frames):
            if max_frames is not None and index >= max_frames:
                break
            if index % self.report.every == 0:
                self._parse(rgb, Path(self.report.labels_dir) / f"{index:06d}.png")
            if writer is not None:
                writer.write(overlay(rgb, self.label, self.palette, classes=self.classes))
            self.report.frames, self.report.size = index + 1, (int(rgb.shape[0]), int(rgb.shape[1]))
            bar.update(1)

    def _parse(self, rgb: np.ndarray, png: Path) -> None:
        """Parse one frame, write its label PNG, count it and its flicker against the previous parsed frame."""
        label = self.frame_parser(rgb)
        write_label_png(png, label, self.palette)
        if self.label is not None and self.label.shape == label.shape:
            self.report.flicker_per_frame.append(flicker(self.label, label))
        self.report.parsed += 1
        self.label = label


def _finish(report: VideoReport, path: Path, out_dir: Path, writer: VideoWriter | None,
            seconds: float) -> VideoReport:
    """Check that frames were decoded, fill in the totals, write ``<stem>_video.json``."""
    if report.frames == 0:
        raise DataError(f"{path}: no video frames could be decoded")
    report.overlay_video = str(writer.path) if writer is not None else None
    report.flicker = float(np.mean(report.flicker_per_frame)) if report.flicker_per_frame else 0.0
    report.seconds = seconds
    write_text_atomic(out_dir / f"{path.stem}_video.json", json.dumps(report.to_dict(), indent=1))
    return report


def write_pan_clip(photos: Sequence, path, seconds: float = 5.0, fps: int = 25, width: int = 640,
                   window: float = 2.0) -> Path:
    """A test clip: the photos side by side (scaled to a common height) seen through a window ``window``
    photos wide, scaled to ``width`` pixels, panning slowly from the left end to the right at sub-pixel steps."""
    import cv2

    images = [read_image(p) if isinstance(p, (str, Path)) else np.asarray(p) for p in photos]
    height = min(im.shape[0] for im in images)
    strip = np.concatenate([cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height),
                                       interpolation=cv2.INTER_AREA) for im in images], axis=1)
    win_w = min(strip.shape[1], round(window * strip.shape[1] / len(images)))
    scale = width / win_w
    size = (width, 2 * round(height * scale / 2))
    frames = max(1, round(seconds * fps))
    with VideoWriter(Path(path), Fraction(fps), crf=16) as writer:
        for t in range(frames):
            x0 = (strip.shape[1] - win_w) * t / max(1, frames - 1)
            m = np.array([[scale, 0, -x0 * scale], [0, scale, 0]], dtype=np.float64)
            writer.write(cv2.warpAffine(strip, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return Path(path)
