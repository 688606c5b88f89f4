"""Checkpoint files: safe loading (``weights_only``), shipped weights by name, models rebuilt from a
checkpoint with every mismatch named, slim export for shipping."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import config as C
from ..errors import ConfigError, HParseError
from ..io.atomic import atomic_path
from ..labels import get_meta

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = {name: WEIGHTS_DIR / f"{name}.pt" for name in
           ("default", "robust", "base", "aiparsing_cpu_ccpmulti", "unified_cpu_ccpmulti")}
#: other names of shipped models: ``multi`` is the better of the two CPU instance models on ccp-multi val (README).
#: ``default`` is CE2P's heads on an ImageNet EfficientNet-Lite0; ``robust`` the from-scratch ResNet-18 model it
#: replaced (the scale-robust fourth stage; its backbone starts the CPU instance models and the light ablations),
#: ``base`` the three-stage model before that
ALIASES = {"multi": "aiparsing_cpu_ccpmulti"}
#: test-time settings a shipped model comes with, over its config's ``eval`` section (``hparse.load`` and the CLI
#: can override them): ``default`` fuses the selfie segmenter's P(person) (:mod:`hparse.engine.person_prior`)
SHIPPED_EVAL = {"default": {"person_prior": "selfie"}}
#: ``train.init_from`` prefix of ImageNet backbone weights from an installed package
IMAGENET = "imagenet:"


def resolve_weights(name_or_path: str | Path) -> Path:
    """A shipped model's file (``default``, an alias such as ``multi``) or an existing checkpoint path."""
    name_or_path = ALIASES.get(str(name_or_path), name_or_path)
    if str(name_or_path) in SHIPPED:
        path = SHIPPED[str(name_or_path)]
        if not path.is_file():
            raise HParseError(f"shipped model {name_or_path!r} is missing from the installation ({path})")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise HParseError(f"{name_or_path!r} is neither a shipped model ({', '.join([*SHIPPED, *ALIASES])}) nor a "
                          "checkpoint file")
    return path


def read_checkpoint(path: str | Path, map_location="cpu"):
    """A saved file's content, loaded with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.is_file():
        raise HParseError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise HParseError(f"{path}: not a readable hparse checkpoint ({e.__class__.__name__}: {e})") from e


def is_hparse_checkpoint(ck) -> bool:
    return isinstance(ck, dict) and "model" in ck and "config" in ck


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load an hparse checkpoint with ``weights_only=True``."""
    ck = read_checkpoint(path, map_location)
    if not is_hparse_checkpoint(ck):
        raise HParseError(f"{path}: not an hparse checkpoint (needs 'model' and 'config' entries)")
    return ck


def checkpoint_meta(ck: dict, path):
    """The label set a checkpoint was trained for."""
    name = ck.get("label_set")
    if not name:
        raise HParseError(f"{path}: the checkpoint names no label set (its 'label_set' entry is missing)")
    try:
        return get_meta(name)
    except KeyError as e:
        raise HParseError(f"{path}: {e.args[0]}") from None


def _examples(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_state(model: torch.nn.Module, state: dict, source) -> None:
    """``model.load_state_dict(state)`` with float16 weights widened; a mismatch or a non-finite weight is an
    :class:`HParseError` naming what does not fit."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise HParseError(f"{source}: weights contain NaN or infinity ({_examples(bad)}); refusing to load them")
    mine = model.state_dict()
    state = {k: v.to(mine[k].dtype) if k in mine and v.is_floating_point() else v for k, v in state.items()}
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(mine[k].shape)}" for k, v in state.items()
              if k in mine and v.shape != mine[k].shape]
    if shapes:
        raise HParseError(f"{source}: weight shapes do not fit the model ({_examples(shapes, 2)}): another "
                          "configuration or label set")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        res = model.load_state_dict(state, strict=False)
        kind = type(model).__name__
        raise HParseError(f"{source}: not weights of this {kind}: {len(res.missing_keys)} missing "
                          f"({_examples(res.missing_keys)}), {len(res.unexpected_keys)} unexpected "
                          f"({_examples(res.unexpected_keys)})") from e


def load_weights(model: torch.nn.Module, name_or_path, meta=None, keys: dict[str, str] | None = None) -> None:
    """Warm start ``model`` from a checkpoint or shipped model name (weights only); its label set must be ``meta``.
    With ``keys`` (``{checkpoint prefix: model prefix}``, e.g. ``{"trunk.backbone.": "body.backbone."}``) only
    the weights under those prefixes load, renamed, each of them required to fit (a backbone warm start from
    another architecture; the label set then does not matter). ``imagenet:NAME`` loads a backbone's ImageNet
    weights (:mod:`hparse.models.backbones.pretrained`) into the module that ``keys`` = ``{"": prefix}`` names."""
    if str(name_or_path).startswith(IMAGENET):
        _load_imagenet(model, str(name_or_path)[len(IMAGENET):], keys)
        return
    path = resolve_weights(name_or_path)
    ck = load_checkpoint(path)
    if not keys:
        if meta is not None and checkpoint_meta(ck, path).name != meta.name:
            raise HParseError(f"{path}: trained for label set {ck['label_set']!r}, not {meta.name!r}")
        load_state(model, ck["model"], path)
        return
    state = {new + k[len(old):]: v for k, v in ck["model"].items() for old, new in keys.items() if k.startswith(old)}
    mine = model.state_dict()
    unknown = [k for k in state if k not in mine]
    if not state or unknown:
        raise HParseError(f"{path}: train.init_keys {keys} select {len(state)} weights"
                          + (f", {len(unknown)} of them not in this model ({_examples(unknown)})" if unknown else ""))
    load_state(_Part(model, state.keys()), state, path)


def _load_imagenet(model: torch.nn.Module, name: str, keys: dict[str, str] | None) -> None:
    from ..models.backbones.pretrained import imagenet_state

    if not keys or list(keys) != [""]:
        raise HParseError(f"train.init_from {IMAGENET}{name} needs train.init_keys {{'': <backbone prefix>}}, "
                          "e.g. {'': 'trunk.backbone.'}")
    prefix = keys[""]
    try:
        backbone = model.get_submodule(prefix.rstrip("."))
    except AttributeError:
        raise HParseError(f"train.init_keys: the model has no module {prefix.rstrip('.')!r}") from None
    state = {prefix + k: v for k, v in imagenet_state(name, backbone).items()}
    load_state(_Part(model, state.keys()), state, f"{IMAGENET}{name}")


class _Part(torch.nn.Module):
    """A view of some of a module's weights, to load them strictly with :func:`load_state`."""

    def __init__(self, module: torch.nn.Module, keys):
        super().__init__()
        self.__dict__["module"], self.__dict__["keys"] = module, set(keys)

    def state_dict(self, *args, **kwargs):
        return {k: v for k, v in self.module.state_dict().items() if k in self.keys}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        missing = sorted(self.keys - set(state))
        if strict and missing:
            raise RuntimeError(f"missing keys {missing}")
        return self.module.load_state_dict(state, strict=False, assign=assign)


def model_from_checkpoint(name_or_path, device="cpu", label_set: str | None = None):
    """``(model, config, meta)`` rebuilt from a checkpoint's own config, in eval mode on ``device``; a released
    SCHP or CE2P checkpoint (:mod:`hparse.models.released`) for ``label_set`` (default: what its class count
    implies). ``label_set`` given for an hparse checkpoint must be the one it was trained for."""
    from ..models import build_model

    path = resolve_weights(name_or_path)
    ck = read_checkpoint(path)
    if not is_hparse_checkpoint(ck):
        model, cfg, meta = released_from(ck, path, label_set)
        return model.to(device).eval(), cfg, meta
    meta = checkpoint_meta(ck, path)
    if label_set is not None and label_set != meta.name:
        raise HParseError(f"{path}: trained for label set {meta.name!r}, not {label_set!r}")
    try:
        cfg = C.migrate_legacy(ck["config"])
        model = build_model(cfg["model"], meta)
    except ConfigError as e:
        raise HParseError(f"{path}: its config does not build a model ({e})") from None
    load_state(model, ck["model"], path)
    shipped = SHIPPED_EVAL.get(ALIASES.get(str(name_or_path), str(name_or_path)))
    if shipped:
        cfg = {**cfg, "eval": {**cfg["eval"], **shipped}}
    return model.to(device).eval(), cfg, meta


def released_from(raw, path, label_set: str | None):
    """``(model, config, meta)`` of a released SCHP / CE2P state dict (see :mod:`hparse.models.released`)."""
    from ..models import build_model, released

    found = released.identify(raw)
    if found is None:
        raise HParseError(f"{path}: not an hparse checkpoint (needs 'model' and 'config' entries), nor a released "
                          "SCHP or CE2P state dict")
    state, release = found
    try:
        meta = get_meta(label_set or released.default_label_set(state, release))
        model, model_cfg = released.released_model(state, release, meta, build_model)
    except KeyError as e:
        raise HParseError(f"{path}: {e.args[0]}") from None
    except HParseError as e:
        raise HParseError(f"{path}: {e}") from None
    cfg = C.load_config(released.BASE_CONFIG)
    cfg["model"], cfg["description"] = model_cfg, f"released {release.upper()} checkpoint {path}"
    cfg["data"]["label_set"] = meta.name
    cfg["eval"]["long_side"] = released.LONG_SIDE.get(meta.name, released.LONG_SIDE["lip"])
    return model, cfg, meta


def export_weights(src: str | Path, dst: str | Path, half: bool = False, extra: dict | None = None) -> Path:
    """Write a slim copy (model weights, config, label set, scores) for inference."""
    ck = load_checkpoint(src)
    model = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["model"].items()}
    slim = {"model": model, "config": ck["config"], "label_set": ck["label_set"],
            "history": ck.get("history", []), **(extra or {})}
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return Path(dst)
