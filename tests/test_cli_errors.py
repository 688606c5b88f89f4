"""Ordinary CLI mistakes end in one ``error:`` line and an exit code, never a traceback.

Every case here fails before a model or dataset is loaded, so the tests are fast and need no weights.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

import hparse
from hparse import config as hconfig
from hparse.cli import app
from hparse.devices import resolve_device
from hparse.errors import ConfigError, HParseError

runner = CliRunner()


def assert_error(res, code: int, *words: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error: ...`` line on stderr naming ``words``."""
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cpu_only_build(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------------------------ --device

def test_unknown_device(tmp_path):
    res = runner.invoke(app, ["parse", "x.jpg", "--out", str(tmp_path), "--device", "gpu"])
    assert_error(res, 2, "unknown device 'gpu'", "cpu, cuda, cuda:N or mps")


def test_cuda_on_cpu_only_build(cpu_only_build, tmp_path):
    res = runner.invoke(app, ["parse", "x.jpg", "--out", str(tmp_path), "--device", "cuda"])
    line = assert_error(res, 2, "CUDA is not available in this PyTorch build", "CPU-only", "use --device cpu")
    assert f"torch {torch.__version__}" in line


def test_unknown_device_on_every_device_command(tmp_path):
    for args in (["train", "ce2p_light_ccp"], ["eval", "ce2p_light_ccp", "ck.pt"],
                 ["topdown", "--data", "cihp", str(tmp_path), "--out", str(tmp_path / "o")]):
        assert_error(runner.invoke(app, [*args, "--device", "tpu"]), 2, "unknown device 'tpu'")


def test_resolve_device_names(cpu_only_build, monkeypatch):
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu" and resolve_device(" CPU ") == "cpu"
    for bad in ("cuda:x", "cuda1", "gpu", ""):
        with pytest.raises(HParseError, match="unknown device"):
            resolve_device(bad)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(HParseError, match="MPS"):
        resolve_device("mps")


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(HParseError, match="no CUDA device 2"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CUDA build, no usable GPU
    with pytest.raises(HParseError, match="finds no usable GPU"):
        resolve_device("cuda")


# --------------------------------------------------------------------------------- other option validators

def test_unknown_palette(tmp_path):
    res = runner.invoke(app, ["parse", "x.jpg", "--out", str(tmp_path), "--palette", "rainbow"])
    assert_error(res, 2, "unknown palette 'rainbow'", "lip, voc")
    assert_error(runner.invoke(app, ["labels", "cihp", "--palette", "rainbow"]), 2, "lip, voc")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_below_one(tmp_path, size):
    res = runner.invoke(app, ["parse", "x.jpg", "--out", str(tmp_path), "--batch-size", size])
    assert_error(res, 2, "--batch-size must be at least 1", f"got {size}")


def test_out_is_an_existing_file(tmp_path):
    file = tmp_path / "taken.txt"
    file.write_text("x")
    assert_error(runner.invoke(app, ["parse", "x.jpg", "--out", str(file)]), 2, "--out", "existing file")
    res = runner.invoke(app, ["topdown", "--data", "cihp", str(tmp_path), "--out", str(file)])
    assert_error(res, 2, "--out", "existing file")


def test_convert_must_be_src_tgt(tmp_path):
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path), "--data", "ccp", str(tmp_path), "--convert", "lip"])
    assert_error(res, 2, "--convert 'lip'", "SRC:TGT")


def test_unknown_config_name_is_one_line():
    assert_error(runner.invoke(app, ["train", "no_such_config"]), 2, "config 'no_such_config' not found")
    assert_error(runner.invoke(app, ["eval", "no_such_config", "ck.pt"]), 2, "config 'no_such_config' not found")


def test_usage_mistakes_are_one_line():
    assert_error(runner.invoke(app, ["parse"], prog_name="hparse"), 2, "Missing argument", "hparse parse -h")
    assert_error(runner.invoke(app, ["labels", "--bogus"]), 2, "No such option: --bogus")
    assert_error(runner.invoke(app, ["no-such-command"]), 2, "No such command")
    assert_error(runner.invoke(app, ["labels", "no_such_set"]), 2, "unknown label set 'no_such_set'")


# ------------------------------------------------------------------------------------------------ catch-all

def test_config_error_escaping_a_command(monkeypatch):
    def broken():
        raise ConfigError("configs folder is broken\n  second line of detail")

    monkeypatch.setattr(hconfig, "list_configs", broken)
    line = assert_error(runner.invoke(app, ["models"]), 1, "configs folder is broken", "second line of detail")
    assert line == "error: configs folder is broken; second line of detail"


def test_hparse_error_escaping_a_command(monkeypatch):
    def broken():
        raise HParseError("something went wrong")

    monkeypatch.setattr(hconfig, "list_configs", broken)
    assert_error(runner.invoke(app, ["models"]), 1, "something went wrong")


def test_keyboard_interrupt_exits_130(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(hconfig, "list_configs", interrupted)
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines() == ["interrupted"]


# ------------------------------------------------------------------------------------------- --version, -h

def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"hparse {hparse.__version__}"


def _command_paths(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _command_paths(cmd, (*prefix, name))


def test_dash_h_on_the_app_and_every_command():
    paths = [(), *_command_paths(get_command(app))]
    assert ("parse",) in paths and ("data", "check") in paths and ("evaluate",) in paths
    for path in paths:
        short, long = runner.invoke(app, [*path, "-h"]), runner.invoke(app, [*path, "--help"])
        assert short.exit_code == 0 and "Usage" in short.stdout, (path, short.output)
        assert short.stdout == long.stdout, path


def test_console_entry_point():
    """``main()`` (the installed ``hparse`` script) behaves like the app: version, one-line errors."""
    cmd = [sys.executable, "-c", "from hparse.cli import main; main()"]
    res = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"hparse {hparse.__version__}"
    res = subprocess.run([*cmd, "parse", "x.jpg", "--device", "gpu"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "unknown device 'gpu'" in res.stderr
