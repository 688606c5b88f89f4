"""The evaluator protocol: ``reset()``, ``process(inputs, outputs)`` per batch, ``evaluate()`` once.

``inputs`` are reader samples (``id``, ``image``, ``label`` and the instance keys a dataset has),
``outputs`` one dict per image (``sem_seg``, ``extras``, ``instances`` or the challenge-folder pieces).
Evaluators are registered by name in :data:`EVALUATORS` and built from config specs by
:func:`build_evaluators`; :func:`best_metric_value` reads ``"<evaluator>/<summary key>"`` from results.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..errors import ConfigError, DataError
from ..registry import Registry


class EvaluationResult(Protocol):
    """What :meth:`Evaluator.evaluate` returns."""

    def summary(self) -> dict[str, float]: ...

    def to_dict(self) -> dict: ...

    def format_table(self) -> str: ...


class _EvaluatorRegistry(Registry):
    """A registry that also stores the registry key on the class as ``name``."""

    def register(self, name: str | None = None):
        add = super().register(name)

        def deco(cls):
            cls.name = name or cls.__name__
            return add(cls)
        return deco


EVALUATORS = _EvaluatorRegistry("evaluator")


class Evaluator:
    """Base class: counts the images it was given and refuses to evaluate none.

    Subclasses take ``(meta, *, options)``, extend :meth:`reset` (calling ``super().reset()``),
    implement :meth:`process_image` and :meth:`result`. ``output_keys`` names the output-dict keys
    the evaluator reads (so a caller can skip computing the others); ``summary_keys`` the keys its
    result's ``summary()`` can hold (for checking ``best_metric`` before a run).
    """

    name = "evaluator"
    output_keys: tuple[str, ...] = ()
    summary_keys: tuple[str, ...] = ()

    def __init__(self, meta):
        self.meta = meta
        self.reset()

    def reset(self) -> None:
        self.num_images = 0

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        if len(inputs) != len(outputs):
            raise ValueError(f"{self.name} evaluator: {len(outputs)} outputs for {len(inputs)} inputs")
        for sample, output in zip(inputs, outputs):
            self.process_image(sample, output)
            self.num_images += 1

    def process_image(self, sample: dict, output: dict) -> None:
        raise NotImplementedError

    def evaluate(self) -> EvaluationResult:
        if not self.num_images:
            raise DataError(f"{self.name} evaluator: nothing was scored (no image was processed)")
        return self.result()

    def result(self) -> EvaluationResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, images={self.num_images})"


def _options(cls) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(cls).parameters.items() if k != "meta"}


def build_evaluator(spec: str | Mapping, meta) -> Evaluator:
    """One evaluator from a name or ``{type: name, **options}``."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"an evaluator is a name or a mapping with a 'type' key, got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    cls = EVALUATORS.get(spec["type"])
    known = _options(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"evaluator {spec['type']!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(known) or 'none'}")
    needed = [k for k, p in known.items() if p.default is inspect.Parameter.empty and k not in options]
    if needed:
        raise ConfigError(f"evaluator {spec['type']!r} needs the option(s) {', '.join(needed)}")
    return cls(meta, **options)


def build_evaluators(specs: Sequence[str | Mapping] | None, meta) -> list[Evaluator]:
    """Evaluators from config ``eval.evaluators``: names or ``{type: name, **options}``, each name once."""
    evaluators = [build_evaluator(s, meta) for s in specs or ()]
    names = [e.name for e in evaluators]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"evaluator(s) {', '.join(twice)} listed more than once")
    return evaluators


def _split_key(key: str) -> tuple[str, str]:
    name, sep, metric = str(key).partition("/")
    if not sep or not name or not metric:
        raise ConfigError(f"best metric {key!r} must read '<evaluator>/<key>', e.g. 'semantic/miou'")
    return name, metric


def check_best_metric(evaluators: Sequence[Evaluator], key: str) -> None:
    """Fail before a run when ``key`` ("<evaluator>/<summary key>") cannot be produced by ``evaluators``."""
    name, metric = _split_key(key)
    by_name = {e.name: e for e in evaluators}
    if name not in by_name:
        raise ConfigError(f"best metric {key!r}: no evaluator {name!r} (evaluators: {', '.join(by_name) or 'none'})")
    keys = by_name[name].summary_keys
    if keys and metric not in keys:
        raise ConfigError(f"best metric {key!r}: {name} reports {', '.join(keys)}")


def best_metric_value(results: Mapping[str, EvaluationResult], key: str) -> float:
    """The value of ``key`` ("<evaluator>/<summary key>", e.g. ``semantic/miou``) in ``results``."""
    name, metric = _split_key(key)
    available = [f"{n}/{k}" for n, r in results.items() for k in r.summary()]
    summary = results[name].summary() if name in results else {}
    if metric not in summary:
        raise ConfigError(f"best metric {key!r} was not produced; available: {', '.join(available) or 'none'}")
    return float(summary[metric])
