"""``hparse parse INPUTS... --out FOLDER``.

Exit codes: 0 every image parsed (or already done with this model and these options), 1 some inputs failed
(each named on stderr, the others parsed), 2 a usage mistake (bad option, unusable model, an option the model
refuses such as ``--probs`` with an instance model, ``--out`` that is an input folder or would replace an input,
nothing to parse).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import (
    BACKENDS,
    FAILURE,
    check_batch_size,
    check_out_dir,
    choice,
    device_option,
    fail,
    palette_option,
    setup_logging,
)


def parse(inputs: list[str] = typer.Argument(..., help="image files, folders or globs"),
          out: Path = typer.Option(Path("outputs"), "--out", "-o", help="output folder (not an input folder)",
                                   callback=check_out_dir),
          model: str = typer.Option("default", help="shipped model name, hparse checkpoint path, or a released "
                                                    "SCHP / CE2P checkpoint (.pth; see --label-set)"),
          label_set: str = typer.Option(None, help="a released SCHP / CE2P checkpoint's label set: lip, atr or "
                                                   "pascal_person_part (default: from its class count)"),
          long_side: int = typer.Option(None, min=32, help="network input long side in pixels (default: the "
                                                           "model's; larger for photos whose people are small)"),
          people: str = typer.Option(None, help="an instance model (shipped name, e.g. unified_cpu_ccpmulti, or "
                                                "checkpoint) whose detections of small people are parsed again on "
                                                "their own crops (labels only: not with --probs)"),
          person_prior: str = typer.Option(None, help="selfie: fuse MediaPipe's selfie segmenter's person "
                                                      "probability with the model's (the default model does); "
                                                      "none: the model alone",
                                           callback=choice("--person-prior", ("selfie", "none"))),
          device: str = device_option(),
          batch_size: int = typer.Option(1, help="images per forward pass", callback=check_batch_size),
          tta: bool = typer.Option(False, help="multi-scale + flip test-time augmentation"),
          overwrite: bool = typer.Option(False, help="redo images already done with this model and options"),
          masks: bool = typer.Option(False, help="also write one binary PNG per class present"),
          probs: bool = typer.Option(False, help="also write class probabilities (.npy, see --probs-format)"),
          probs_format: str = typer.Option("f16", help="--probs as f16 (float16) or u8 (uint8 = round(p * 255))",
                                           callback=choice("--probs-format", ("f16", "u8"))),
          probs_size: str = typer.Option("image", help="--probs at the image's size, or on the network's "
                                                       "output grid (the cells the photo covers, no padding; "
                                                       "much smaller for big photos)",
                                         callback=choice("--probs-size", ("image", "network"))),
          sidecar: bool = typer.Option(False, "--json", help="also write a JSON sidecar with label names"),
          palette: str = palette_option(),
          png_mode: str = typer.Option("palette", help="label PNGs: palette (indexed, coloured) or gray (8-bit grey, "
                                                       "for OpenCV readers); the pixel is the class id either way",
                                       callback=choice("--png-mode", ("palette", "gray"))),
          backend: str = typer.Option(None, help="torch, onnxruntime or onnxruntime-int8 (default: the fastest "
                                                                 "installed)",
                                      callback=choice("--backend", BACKENDS)),
          every: int = typer.Option(1, min=1, help="videos: parse every k-th frame"),
          smooth: float = typer.Option(0.0, min=0.0, max=0.99, help="videos: temporal smoothing of the class "
                                                                     "scores (0 = none; 0.5 halves flicker)"),
          extras: bool = typer.Option(False, "--extras", "--levels",
                                      help="also write what the model outputs beyond the label map: "
                                           "boundary / structure-point heatmaps, hierarchy levels and gate "
                                           "charts, as the model provides"),
          min_score: float = typer.Option(None, min=0.0, max=1.0,
                                          help="instance models: the people scoring at least this make the label "
                                               "PNG, global_parsing/, the overlay and --json (default 0.3); "
                                               "instance_parsing/, instance_segmentation/ and person_parsing/ (for "
                                               "evaluate --instance) keep every person")):
    """Parse images (a label PNG whose pixel is the class id and a colour overlay each) and videos (a label
    PNG per frame and an overlay video). Instance models also write the challenge folders and outline each person
    on the overlay. Exit code 0: all done, 1: some inputs failed (named), 2: usage mistake."""
    from ..api import load
    from ..engine import distributed
    from ..engine.parse import ParseReport, extra_overlays, parse_files
    from ..engine.video import is_video_file
    from ..io.image import max_pixels

    setup_logging()
    try:
        max_pixels()   # a malformed HPARSE_MAX_PIXELS is a usage mistake, before the model loads
        parser = load(model, device=distributed.local_device(device) if device else None, tta=tta, backend=backend,
                      batch_size=batch_size, label_set=label_set, long_side=long_side, people=people,
                      person_prior=person_prior)
        images = [i for i in inputs if not is_video_file(i)]
        rep = parse_files(parser, images, out, batch_size, overwrite, masks, probs, sidecar, palette,
                          extras=extra_overlays if extras else None, png_mode=png_mode, probs_format=probs_format,
                          probs_size=probs_size, min_score=min_score) if images else ParseReport()
        _parse_videos(parser, [i for i in inputs if is_video_file(i)], out, every, smooth, palette, rep)
    except HParseError as e:
        fail(e)
    _summary(rep, out)


def _parse_videos(parser, videos: list[str], out: Path, every: int, smooth: float, palette, rep) -> None:
    """Each video given by name: frames' label PNGs and an overlay video (``hparse.engine.video``)."""
    from ..engine.video import parse_video

    for video in videos:
        try:
            parse_video(parser, video, out, every=every, smooth=smooth, palette=palette)
            rep.written.append(video)
        except HParseError as e:
            rep.failed[video] = str(e)


def _summary(rep, out: Path) -> None:
    typer.echo(f"{len(rep.written)} parsed, {len(rep.skipped)} skipped (done before with this model and these "
               f"options), {len(rep.failed)} failed -> {out}")
    for path, why in rep.failed.items():
        typer.secho(f"  failed: {why}" if path in why else f"  failed: {path}: {why}", fg="yellow", err=True)
    if rep.failed:
        raise typer.Exit(FAILURE)


def register(app: typer.Typer) -> None:
    app.command("parse")(parse)
