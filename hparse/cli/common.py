"""What the command modules share: one-line errors, the scores report, logging, option validators.

Exit codes: 0 success, 1 a failure (``FAILURE``), 2 a usage mistake (``USAGE``), 130 interrupted.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from typer.core import TyperGroup

from ..errors import HParseError

try:  # typer >= 0.22 ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer: the click package
    from click.exceptions import UsageError
try:
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:  # click < 8.2 prints a bare group's help without an exception
        NoArgsIsHelpError = ()

FAILURE, USAGE, INTERRUPTED = 1, 2, 130
CONTEXT = {"help_option_names": ["-h", "--help"]}
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}  # train / eval: key.sub=value overrides


def message(problem: BaseException | str) -> str:
    """The text of an error on one line (a KeyError's message without the quotes repr adds)."""
    if isinstance(problem, KeyError) and problem.args:
        problem = str(problem.args[0])
    lines = [line.strip() for line in str(problem).splitlines()]
    return "; ".join(line for line in lines if line) or type(problem).__name__


def fail(problem: BaseException | str, code: int = USAGE) -> NoReturn:
    """Print ``error: <problem>`` on one line to stderr and exit with ``code``."""
    typer.secho(f"error: {message(problem)}", fg="red", err=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def report(scores, json_path: Path | None) -> None:
    """Print a scores table; also write it as JSON when ``json_path`` is given."""
    typer.echo(scores.format_table())
    if json_path:
        from ..io.atomic import write_text_atomic

        write_text_atomic(json_path, json.dumps(scores.to_dict(), indent=1))


# ----------------------------------------------------------------------------------------- option validators
# Typer callbacks: they run while the command line is parsed, before any model or data is loaded.

def check_device(value: str | None) -> str | None:
    """``--device``: cpu, cuda, cuda:N or mps, available here; None stays None (the engine's default)."""
    if value is None:
        return None
    from ..devices import resolve_device

    try:
        return resolve_device(value)
    except HParseError as e:
        fail(e)


def check_palette(value: str | None) -> str | None:
    """``--palette``: one of :data:`hparse.labels.PALETTES`."""
    from ..labels import PALETTES

    if value is not None and value not in PALETTES:
        fail(f"unknown palette {value!r}; choose from: {', '.join(PALETTES)}")
    return value


def check_batch_size(value: int) -> int:
    if value < 1:
        fail(f"--batch-size must be at least 1 (got {value})")
    return value


def check_out_dir(value: Path | None) -> Path | None:
    """``--out`` of commands that write a folder: must not be an existing file."""
    if value is not None and value.exists() and not value.is_dir():
        fail(f"--out {value} is an existing file; give a folder (it is created when missing)")
    return value


def check_convert(value: str | None) -> str | None:
    """``--convert``: SRC:TGT label sets (``hparse labels`` lists the converters)."""
    if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
        fail(f"--convert {value!r} must look like SRC:TGT, e.g. lip:ppss (see `hparse labels`)")
    return value


def device_option(help: str = "cpu, cuda, cuda:N or mps (default: cuda if available)"):
    return typer.Option(None, help=help, callback=check_device)


def palette_option(help: str = "colour palette: lip or voc (default: the label set's)"):
    return typer.Option(None, help=help, callback=check_palette)


# ------------------------------------------------------------------------------------ one-line errors for all

@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn what escapes a command into one ``error:`` line and an exit code, never a traceback.

    click usage mistakes -> 2; :class:`HParseError` (ConfigError, DataError...) and OS errors -> 1;
    Ctrl-C -> 130. ``typer.Exit`` and the help shown for a bare group pass through.
    """
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as e:
        hint = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        fail(f"{e.format_message()}{hint}", USAGE)
    except HParseError as e:
        fail(e, FAILURE)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise
        fail(e, FAILURE)


class HParseGroup(TyperGroup):
    """The root command group: every command runs inside :func:`one_line_errors`."""

    def make_context(self, info_name, args, parent=None, **extra):
        with one_line_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with one_line_errors():
            return super().invoke(ctx)


BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")  # what runs a network (hparse.engine.backends)


def choice(name: str, choices: tuple[str, ...]):
    """An option callback accepting ``choices`` (or no value); anything else is a one-line usage error."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            fail(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value
    return check
