"""The ``challenge_folders`` evaluator: writes each image's ``outputs["instances"]`` as the LIP / CIHP
challenge folders (:func:`hparse.io.instance_outputs.write_instance_outputs`) under ``out``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import instance_outputs as io
from .base import EVALUATORS, Evaluator


@dataclass
class FoldersWritten:
    """Where the challenge folders were written and for how many images."""

    out: Path
    num_images: int
    folders: tuple[str, ...]

    def summary(self) -> dict[str, float]:
        """num_images."""
        return {"num_images": float(self.num_images)}

    def to_dict(self) -> dict:
        return {"out": str(self.out), "num_images": self.num_images, "folders": list(self.folders)}

    def format_table(self) -> str:
        return f"wrote {', '.join(f'{f}/' for f in self.folders)} of {self.num_images} images -> {self.out}"


@EVALUATORS.register("challenge_folders")
class ChallengeFoldersEvaluator(Evaluator):
    """Options: ``out`` (the prediction root, required), ``folders`` (default all four) and the writer's
    ``part_score``, ``score_thresh``, ``semantic_thresh``."""

    output_keys = ("instances",)
    summary_keys = ("num_images",)

    def __init__(self, meta, out: str | Path, folders=io.FOLDERS, part_score: str = "person",
                 score_thresh: float = 0.0, semantic_thresh: float | None = None):
        unknown = sorted(set(folders) - set(io.FOLDERS))
        if unknown:
            raise ConfigError(f"challenge_folders: unknown folder(s) {', '.join(unknown)}; "
                              f"choose from {', '.join(io.FOLDERS)}")
        self.out, self.folders = Path(out), tuple(folders)
        self.write_options = dict(part_score=part_score, score_thresh=score_thresh, semantic_thresh=semantic_thresh)
        super().__init__(meta)

    def process_image(self, sample: dict, output: dict) -> None:
        if "instances" not in output:
            raise ConfigError(f"challenge_folders evaluator needs outputs['instances'] (image {sample.get('id')!r} "
                              f"has {', '.join(output) or 'nothing'})")
        io.write_instance_outputs(self.out, sample["id"], output["instances"], self.meta, folders=self.folders,
                                  **self.write_options)

    def result(self) -> FoldersWritten:
        return FoldersWritten(self.out, self.num_images, self.folders)
