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


def _seed_run(root: Path, config: str, k: int, miou: float, train_extra: str = "") -> Path:
    """A run of ``config`` at seed ``k`` scoring ``miou`` (``train_extra``: more ``train`` keys, YAML flow)."""
    run = root / f"{config}_s{k}"
    run.mkdir()
    (run / "config.yaml").write_text(f"name: {config}\ntrain: {{seed: {k}{train_extra}}}\n")
    (run / "eval.json").write_text(json.dumps({"miou": miou, "pixel_acc": 0.9, "f1": 0.5}))
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
    """Two seeds per row: ``mean ± half the range``, the number of runs, and every pair of rows whose mIoU
    difference exceeds both rows' spreads."""
    def seed(config: str, k: int, miou: float) -> Path:
        return _seed_run(tmp_path, config, k, miou)

    runs = [seed("basic", 0, 0.40), seed("lcm", 0, 0.405), seed("gem", 0, 0.43), seed("basic", 1, 0.41),
            seed("lcm", 1, 0.395), seed("gem", 1, 0.44)]
    table.main([str(r) for r in runs])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "| config | mIoU | pixel acc | F1 | runs |"
    assert out[2] == "| `basic` | 40.50 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[3] == "| `lcm` | 40.00 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[4] == "| `gem` | 43.50 ± 0.50 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[-1] == "mIoU differences beyond both rows' spreads: `gem` vs `basic` +3.00; `gem` vs `lcm` +3.50"


def test_paired_differences_to_a_control_seed_by_seed(tmp_path, capsys):
    """Seeds far apart, rows close at each seed: the paired column sees what the pooled spreads hide; an empty
    section a later version added to the config does not split a row."""
    def seed(config: str, k: int, miou: float, extra: str = "") -> Path:
        return _seed_run(tmp_path, config, k, miou, extra)

    runs = [seed("base", 0, 0.19), seed("base", 1, 0.15, ", lr_mult: {}"), seed("base", 2, 0.17),
            seed("gan", 0, 0.195), seed("gan", 1, 0.156), seed("odd", 0, 0.20), seed("odd", 1, 0.14)]
    table.main([str(r) for r in runs] + ["--control", "base"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "| config | mIoU | pixel acc | F1 | Δ mIoU vs control (paired by seed) | runs |"
    assert out[2] == "| `base` | 17.00 ± 2.00 | 90.00 ± 0.00 | 50.00 ± 0.00 | - | 3 |"
    assert out[3] == "| `gan` | 17.55 ± 1.95 | 90.00 ± 0.00 | 50.00 ± 0.00 | +0.55 ± 0.05 | 2 |"
    assert out[4] == "| `odd` | 17.00 ± 3.00 | 90.00 ± 0.00 | 50.00 ± 0.00 | +0.00 ± 1.00 | 2 |"
    assert out[-1] == "paired differences to `base` beyond their spread: `gan` +0.55 (seeds 0, 1)"
    with pytest.raises(SystemExit, match="not one of the rows"):
        table.main([str(r) for r in runs] + ["--control", "nope"])


def test_rows_of_one_config_set_apart_by_overrides_are_not_pooled(tmp_path, capsys):
    """Table 6 at paper size is one config with ``model.mode`` overridden per row: those rows stay apart, named
    by what differs, while the seeds of each still pool."""
    def run(name: str, mode: str, k: int, miou: float) -> Path:
        folder = tmp_path / f"{mode}_s{k}"
        folder.mkdir()
        (folder / "config.yaml").write_text(f"name: cnif_r101_ppp\nmodel: {{mode: {mode}, width: 1}}\n"
                                            f"train: {{seed: {k}, epochs: 4}}\n")
        (folder / "eval.json").write_text(json.dumps({"miou": miou, "pixel_acc": 0.9, "f1": 0.5}))
        return folder

    table.main([str(run("full", "full", 0, 0.5)), str(run("bu", "direct_bu", 0, 0.4)),
                str(run("full", "full", 1, 0.52))])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[2] == "| `cnif_r101_ppp (model.mode=full)` | 51.00 ± 1.00 | 90.00 ± 0.00 | 50.00 ± 0.00 | 2 |"
    assert out[3] == "| `cnif_r101_ppp (model.mode=direct_bu)` | 40.00 | 90.00 | 50.00 | 1 |"


def test_other_low_res_readings_get_their_own_columns(tmp_path, capsys):
    """``--low-res-mode pooled|generator --json RUN/eval_MODE.json`` beside eval.json: one column per reading."""
    run = _run(tmp_path, "mman_a", lowres={"miou": 0.2}, pooled_lowres={"miou": 0.25}, generator_lowres={"miou": 0.3})
    table.main([str(run)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("| config | mIoU | pixel acc | F1 | low-res mIoU (1/16) | low-res mIoU (1/16, pooled) "
                        "| low-res mIoU (1/16, generator) |")
    assert lines[2] == "| `mman_a` | 41.23 | 90.00 | - | 20.00 | 25.00 | 30.00 |"


def test_run_with_a_stem_is_a_row_of_its_own_named_by_it(tmp_path, capsys):
    """``RUN:eval_crf`` reads RUN/eval_crf.json (and its own side files): the same checkpoint scored another way
    (Table 4's "+CRF") is a separate row, and its seeds pool like any other."""
    runs = []
    for k, (plain, crf) in enumerate(((0.40, 0.41), (0.42, 0.43))):
        run = _run(tmp_path, f"base_s{k}", crf={"miou": crf, "pixel_acc": 0.9, "f1": None},
                   crf_ipr={"pred": {"ipr": 1e-6}, "gt": {"ipr": 0.0}})
        (run / "config.yaml").write_text(f"name: base\ntrain: {{seed: {k}}}\n")
        (run / "eval.json").write_text(json.dumps({"miou": plain, "pixel_acc": 0.9, "f1": None}))
        runs.append(run)
    table.main([str(r) for r in runs] + [f"{r}:eval_crf" for r in runs])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith("| `base` | 41.00 ± 1.00 | 90.00 ± 0.00 | - | - | 2 |")
    assert lines[3] == "| `base + eval_crf` | 42.00 ± 1.00 | 90.00 ± 0.00 | - | 1.0 ± 0.0 | 2 |"
