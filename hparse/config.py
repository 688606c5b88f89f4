"""Configs: small YAML files with ``_base_`` inheritance and ``key.sub=value`` overrides.

A config is a nested dict with the sections ``model``, ``loss``, ``data``, ``train`` and
``eval``. ``_base_: other.yaml`` (a path relative to the file) is merged under the file;
dicts merge key by key, lists and scalars replace. Overrides from the command line use
dotted keys and YAML values: ``train.lr=0.01 data.input_size=[256,384] model.backbone.name=resnet18``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SECTIONS = ("name", "model", "loss", "data", "train", "eval", "description")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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
    path = resolve_path(path)
    cfg = _load(path)
    own_name = cfg.pop("_own_name_")
    unknown = set(cfg) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {list(SECTIONS)}")
    cfg["name"] = cfg["name"] if own_name else path.stem
    return apply_overrides(cfg, overrides or [])


def _load(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(raw).__name__}")
    base = raw.pop("_base_", None)
    cfg = merge(_load(path.parent / base) if base else {}, raw)
    cfg.pop("_own_name_", None)
    return {**cfg, "_own_name_": "name" in raw}


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like key.sub=value")
        key, value = ov.split("=", 1)
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: bad value ({e})") from e
        parts = key.strip().split(".")
        if parts[0] not in SECTIONS:
            raise ConfigError(f"override {ov!r}: unknown section {parts[0]!r}")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a mapping")
            node = node[p]
        node[parts[-1]] = value
    return cfg


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
