"""scripts/ablation_table.py: one markdown row per run from the JSON that `hparse eval --json` writes."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "ablation_table.py"
spec = importlib.util.spec_from_file_location("ablation_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def _run(root: Path, name: str, **extra) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(f"name: {name}\n")
    (run / "eval.json").write_text(json.dumps({"miou": 0.4123, "pixel_acc": 0.9, "f1": None}))
    for stem, value in extra.items():
        (run / f"eval_{stem}.json").write_text(json.dumps(value))
    return run


def test_rows_take_their_columns_from_the_files_present(tmp_path, capsys):
    a = _run(tmp_path, "mman_a", lowres={"miou": 0.2}, ipr={"pred": {"ipr": 3.1e-5}, "gt": {"ipr": 0.0}})
    b = _run(tmp_path, "cnif_b", level2={"miou": 0.5}, level3={"miou": 0.75})
    table.main([str(a), str(b)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("| config | mIoU | pixel acc | F1 | low-res mIoU (1/16) | IPR (ppm) | level 2 mIoU "
                        "| level 3 mIoU |")
    assert lines[2] == "| `mman_a` | 41.23 | 90.00 | - | 20.00 | 31.0 | - | - |"
    assert lines[3] == "| `cnif_b` | 41.23 | 90.00 | - | - | - | 50.00 | 75.00 |"


def test_undefined_hhp_f1_falls_back_to_guarded_precision_and_is_marked(tmp_path, capsys):
    run = _run(tmp_path, "acenet_c")
    per_class = {"background": {"precision": 0.9, "recall": 0.8}, "hat": {"precision": None, "recall": 0.0},
                 "hair": {"precision": 0.6, "recall": 0.4}}
    (run / "eval.json").write_text(json.dumps({"miou": 0.3, "pixel_acc": 0.8, "f1": None, "per_class": per_class}))
    defined = _run(tmp_path, "acenet_d")
    (defined / "eval.json").write_text(json.dumps({"miou": 0.3, "pixel_acc": 0.8, "f1": 0.5, "per_class": per_class}))
    table.main([str(run), str(defined)])
    lines = capsys.readouterr().out.strip().splitlines()
    p, r = 1.5 / 3, 1.2 / 3
    assert lines[2] == f"| `acenet_c` | 30.00 | 80.00 | {100 * 2 * p * r / (p + r):.2f}* |"
    assert lines[3] == "| `acenet_d` | 30.00 | 80.00 | 50.00 |"


def test_missing_evaluation_is_an_error_naming_the_command(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(SystemExit, match="hparse eval"):
        table.main([str(tmp_path / "r")])


def test_seeds_of_a_config_pool_into_mean_and_spread_and_differences_are_read_against_it(tmp_path, capsys):
    """Two seeds per row: ``mean ± half the range``, the number of runs, and the rows whose mIoU leaves the
    spreads of the control (first row) and itself."""
    def seed(config: str, k: int, miou: float) -> Path:
        run = tmp_path / f"{config}_s{k}"
        run.mkdir()
        (run / "config.yaml").write_text(f"name: {config}\ntrain: {{seed: {k}}}\n")
        (run / "eval.json").write_text(json.dumps({"miou": miou, "pixel_acc": 0.9, "f1": 0.5}))
        return run

    runs = [seed("basic", 0, 0.40), seed("lcm", 0, 0.405), seed("gem", 0, 0.43), seed("basic", 1, 0.41),
            seed("lcm", 1, 0.395), seed("gem", 1, 0.44)]
    table.main([str(r) for r in runs])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "| config | mIoU | pixel acc | F1 | runs |"
    assert out[2] == "| `basic` | 40.50 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[3] == "| `lcm` | 40.00 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[4] == "| `gem` | 43.50 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[-1] == "mIoU beyond the spread of `basic` and the row: `gem` +3.00"
