"""Configs: small YAML files with ``_base_`` inheritance and ``key.sub=value`` overrides, strictly validated.

A config is a nested dict with the sections ``model``, ``loss``, ``data``, ``train`` and ``eval`` (plus
``name`` and ``description``). ``_base_: other.yaml`` (or a list of files, merged in order) is merged under
the file; paths are relative to the file, or names of packaged configs. Dicts merge key by key, lists and
scalars replace (a dict with ``_replace_: true`` replaces too). Overrides from the command line use dotted
keys and YAML values: ``train.lr=0.01 data.input_size=[256,384] model.backbone.name=resnet18``.

:func:`load_config` validates ``data``, ``train`` and ``eval`` against :mod:`hparse.config_schema` and
fills in every default; ``model`` and ``loss`` are kept as given (their keys depend on the registered
classes: ``hparse.models.config_check``). Every mistake is a :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .config_schema import IMAGENET_MEAN, IMAGENET_STD, SECTIONS, ConfigSchema, dotted, error_message, suggest
from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: keys that left their section: old dotted key -> new one
MOVED = {"data.mean": "model.pixel_mean", "data.std": "model.pixel_std"}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_replace_", False):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy({kk: vv for kk, vv in v.items() if kk != "_replace_"}
                                   if isinstance(v, dict) else v)
    return out


def resolve_path(name: str | Path) -> Path:
    """A config path, or the name of a config shipped in the package (``ce2p_light_ccp``)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / f"{name}.yaml", CONFIG_DIR / name):
        if cand.is_file():
            return cand
    raise ConfigError(f"config {name!r} not found (neither a file nor a packaged config; "
                      f"packaged: {', '.join(list_configs())})")


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Load, merge the ``_base_`` files, apply ``overrides``, validate and fill in the defaults."""
    file = resolve_path(path)
    cfg = _load(file.resolve())
    cfg.setdefault("name", file.stem)
    cfg = apply_overrides(cfg, overrides or [])
    return _validate(cfg, f"in {path}", overrides or [])


def validate_config(cfg: dict) -> dict:
    """The checks of :func:`load_config` for a config already loaded (e.g. from a checkpoint): a new dict
    with ``data`` / ``train`` / ``eval`` complete; raises :class:`ConfigError`."""
    return _validate(cfg, "", [])


def migrate_legacy(cfg: dict) -> dict:
    """Upgrade a config written by an older hparse (e.g. stored in a checkpoint), then validate it:
    ``data.mean`` / ``data.std`` (and a ``Normalize`` step's own mean/std) become ``model.pixel_mean`` /
    ``model.pixel_std`` unless they are the ImageNet defaults; ``Normalize`` steps become ``ToTensor``;
    ``model.label_set`` (CNIF) is dropped."""
    cfg = copy.deepcopy(cfg)
    data, model = cfg.get("data"), cfg.get("model")
    if isinstance(data, dict):
        stats = {"pixel_mean": data.pop("mean", None), "pixel_std": data.pop("std", None)}
        steps = data.get("train_transforms") or []
        for i, step in enumerate(steps):
            if isinstance(step, dict) and step.get("type") == "Normalize":
                stats["pixel_mean"] = stats["pixel_mean"] or step.get("mean")
                stats["pixel_std"] = stats["pixel_std"] or step.get("std")
                steps[i] = {"type": "ToTensor"}
        defaults = {"pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD}
        for key, value in stats.items():
            if value is not None and not _same(value, defaults[key]) and isinstance(model, dict):
                model.setdefault(key, [float(v) for v in value])
    if isinstance(model, dict):
        model.pop("label_set", None)  # CNIF's hierarchy: models now take the data's label set
    return validate_config(cfg)


def _same(a, b, tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------------
# loading

def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(raw).__name__}")
    return raw


def _base_path(base: Any, referrer: Path) -> Path:
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{referrer}: _base_ must be a file name or a list of file names (got {base!r})")
    for cand in (referrer.parent / base, CONFIG_DIR / base, CONFIG_DIR / f"{base}.yaml"):
        if cand.is_file():
            return cand.resolve()
    raise ConfigError(f"{referrer}: _base_ file {base!r} not found (looked in {referrer.parent})")


def _load(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file merged over its bases; a base's ``name`` is not inherited."""
    if path in chain:
        cycle = [p.name for p in chain[chain.index(path):]] + [path.name]
        raise ConfigError(f"_base_ cycle: {' -> '.join(cycle)}")
    raw = _read(path)
    bases = raw.pop("_base_", None)
    cfg: dict = {}
    for base in bases if isinstance(bases, list) else ([] if bases is None else [bases]):
        inherited = _load(_base_path(base, path), (*chain, path))
        inherited.pop("name", None)
        cfg = merge(cfg, inherited)
    return merge(cfg, raw)


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if not sep:
            raise ConfigError(f"override {ov!r} must look like key.sub=value")
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: bad value ({e})") from e
        parts = key.strip().split(".")
        if parts[0] not in SECTIONS:
            raise ConfigError(f"override {ov!r}: unknown section {parts[0]!r}; {suggest(parts[0], SECTIONS)}")
        node = cfg
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"override {ov!r}: {'.'.join(parts[:i + 1])} is not a mapping")
            node = node[p]
        node[parts[-1]] = value
    return cfg


# ---------------------------------------------------------------------------------------------------------
# validation

def _validate(cfg: dict, where: str, overrides: list[str]) -> dict:
    if not isinstance(cfg, dict):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    try:
        checked = ConfigSchema.model_validate(cfg)
    except ValidationError as e:
        raise ConfigError(_explain(e, where, overrides)) from None
    out = {k: copy.deepcopy(cfg[k]) for k in SECTIONS if k in cfg and k not in ("data", "train", "eval")}
    out.update(checked.model_dump(include={"data", "train", "eval"}))
    return {k: out[k] for k in SECTIONS if k in out}


def _explain(err: ValidationError, where: str, overrides: list[str]) -> str:
    """The first error in one line with its source (an override, listed first, or the file), then the other
    keys at fault."""
    found = []
    for e in err.errors():
        key = dotted(e["loc"])
        if e["type"] == "extra_forbidden" and key in MOVED:
            line = f"{key}: this key moved to {MOVED[key]}"
        else:
            line = error_message(e, key, _fields_at(e["loc"]))
        source = next((ov for ov in overrides if _covers(ov.partition("=")[0].strip(), key)), None)
        found.append((source is None, key, line + (f" (override {source!r})" if source else
                                                   f" ({where})" if where else "")))
    found.sort(key=lambda f: f[0])
    rest = [key for _, key, _ in found[1:]]
    return found[0][2] + (f" [{len(rest)} more: {', '.join(rest)}]" if rest else "")


def _covers(override_key: str, key: str) -> bool:
    return key == override_key or key.startswith((override_key + ".", override_key + "["))


def _fields_at(loc: tuple) -> list[str]:
    """The valid keys of the schema model that holds the last element of ``loc``."""
    model: type[BaseModel] | None = ConfigSchema
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            return []
        model = _model_in(model.model_fields[part].annotation) if part in model.model_fields else None
    return list(model.model_fields) if model else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _model_in(arg)) is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------------------
# access and output

def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
