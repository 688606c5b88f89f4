"""The strict schema of a config's ``data``, ``train`` and ``eval`` sections (pydantic v2), and the
signature-based checks of the sections built from registries (``model``, ``loss``, transforms).

Every section model forbids unknown keys; its defaults are the values the engine uses when a key is
absent. :func:`hparse.config.validate_config` turns the models' errors into one-line
:class:`~hparse.errors.ConfigError` messages naming the dotted key.

A registry-built section (``{type: name, **kwargs}``) has no schema of its own: :func:`check_kwargs`
checks its keys against the parameters of the callable it is passed to and their type hints.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: mIoU conventions of ``hparse.metrics.semantic.CONVENTIONS`` (a test keeps the two equal).
CONVENTIONS = ("ce2p", "nan", "d2")


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _typed_specs(specs: list[Any], allow_names: bool = False) -> list[Any]:
    """Items ``{type: name, ...}`` (or plain names when ``allow_names``); the options stay unchecked here."""
    for i, s in enumerate(specs):
        if isinstance(s, str) and allow_names:
            continue
        if not isinstance(s, dict) or not isinstance(s.get("type"), str):
            kind = "a name or a mapping" if allow_names else "a mapping"
            raise ValueError(f"item {i} must be {kind} with a 'type' (got {s!r})")
    return specs


Size = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
Scales = Annotated[list[PositiveFloat], Field(min_length=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]
OptimizerName = Annotated[Literal["sgd", "adam", "adamw"], BeforeValidator(_lower)]
LrPolicy = Annotated[Literal["poly", "step"], BeforeValidator(_lower)]
Steps = Annotated[list[dict[str, Any]], AfterValidator(_typed_specs)]
EvaluatorSpecs = Annotated[list[Any], Field(min_length=1),
                           AfterValidator(functools.partial(_typed_specs, allow_names=True))]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------------------
# sections

class ExtraTrainData(Section):
    """Another training set of the same label set: read alongside ``data`` (``data.extra_train``) or instead of
    its training split (``data.train_data``)."""
    layout: str
    root: str
    split: str = "train"


class DataConfig(Section):
    layout: str | None = None                      # reader layout (hparse.data.readers); needed to train
    root: str | None = None                        # dataset folder; needed to train
    label_set: str | None = None                   # default: the layout's label set
    train_split: str = "train"
    val_split: str | None = None                   # None: no validation during training
    input_size: Size = [512, 512]                  # H x W of training crops (model listings, benchmarks)
    train_transforms: Steps = []                   # [{type: name, **params}], see hparse.data.transforms
    extra_train: list[ExtraTrainData] = []         # more training sets, same label set (e.g. composed canvases)
    train_data: ExtraTrainData | None = None       # train on this instead of root's train_split (validate on root)


class OptimizerConfig(Section):
    """The keys of ``hparse.engine.trainer.build_optimizer``."""
    optimizer: OptimizerName = "sgd"
    lr: PositiveFloat = 0.01
    weight_decay: NonNegativeFloat = 5e-4
    momentum: NonNegativeFloat = 0.9               # sgd
    nesterov: bool = False                         # sgd
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)] = [0.9, 0.999]   # adam, adamw
    no_decay_norm_bias: bool = True                # no weight decay on 1-d parameters (norms, biases)
    lr_mult: dict[str, PositiveFloat] = {}         # {parameter-name prefix: lr multiplier}, e.g. a pretrained trunk


class DOptimizerConfig(OptimizerConfig):
    """The discriminators' optimiser: MMAN's Adam (paper Sec. 4.2) unless overridden key by key."""
    optimizer: OptimizerName = "adam"
    lr: PositiveFloat = 2e-4
    weight_decay: NonNegativeFloat = 1e-4
    no_decay_norm_bias: bool = False


class AdversarialConfig(Section):
    """``train.adversarial`` (models with discriminators; see hparse.engine.adversarial)."""
    gan_loss: Literal["bce", "lsgan"] = "bce"
    weights: dict[str, NonNegativeFloat] = {}      # per discriminator, default 1
    optimizer: DOptimizerConfig = DOptimizerConfig()
    detach_macro: bool = False
    d_step_prob: Fraction = 1.0
    d_temperature: PositiveFloat = 1.0


class TrainConfig(OptimizerConfig):
    lr_policy: LrPolicy = "poly"
    warmup_iters: NonNegativeInt = 0
    warmup_ratio: Fraction = 0.1
    poly_power: NonNegativeFloat = 0.9             # poly
    lr_step_epochs: list[NonNegativeInt] = []      # step
    lr_gamma: PositiveFloat = 0.1                  # step
    batch_size: PositiveInt = 8
    accumulate: PositiveInt = 1
    epochs: PositiveInt = 10
    max_steps: NonNegativeInt | None = None        # stop early, keeping the schedule (tests, smoke runs)
    amp: bool = True                               # mixed precision on CUDA
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    sync_bn: bool = False                          # SyncBatchNorm across GPU processes (torchrun)
    find_unused_parameters: bool = False           # DDP: a model with weights its losses do not reach
    seed: NonNegativeInt = 0
    repeat_factor_threshold: Fraction | None = None  # repeat-factor sampling of images holding rare classes (LVIS)
    workers: NonNegativeInt = 2
    checkpoint_every: PositiveInt = 100            # steps
    val_every: PositiveInt = 1                     # epochs
    out_dir: str | None = None                     # default runs/<config name>
    device: str | None = None                      # default cuda if available
    init_from: str | None = None                   # warm start: weights only
    init_keys: dict[str, str] = {}                 # warm start only these: {checkpoint prefix: model prefix}
    adversarial: AdversarialConfig = AdversarialConfig()


class CRFConfig(Section):
    """``eval.crf``: dense CRF post-processing (:class:`hparse.ops.crf.DenseCRF`; ``{}`` for these defaults:
    DeepLab's kernel widths and weights, 5 mean-field iterations, a 7x7 window on a 4x coarser grid)."""
    iters: NonNegativeInt = 5
    window: PositiveInt = 7
    downsample: PositiveInt = 4
    bilateral_xy: PositiveFloat = 80.0
    bilateral_rgb: PositiveFloat = 13.0
    bilateral_weight: NonNegativeFloat = 4.0
    gaussian_xy: PositiveFloat = 3.0
    gaussian_weight: NonNegativeFloat = 3.0

    @field_validator("window")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (got {v})")
        return v


class EvalConfig(Section):
    long_side: PositiveInt | None = 512            # network input's long side; None: the image's own size
    scales: Scales = [1.0]
    tta_scales: Scales = [0.75, 1.0, 1.25]
    flip: bool = False
    average: Literal["logits", "probs"] = "logits"
    convention: Literal[CONVENTIONS] = "ce2p"
    evaluators: EvaluatorSpecs = ["semantic"]      # names or {type: name, **options}
    best_metric: str = "semantic/miou"             # "<evaluator>/<summary key>"
    crf: CRFConfig | None = None                   # dense CRF on the probabilities (MMAN Table 4 "+CRF")
    person_prior: Literal["selfie"] | None = None  # fuse a person segmenter's P(person) (hparse.engine.person_prior)

    @field_validator("best_metric")
    @classmethod
    def _names_an_evaluator(cls, v: str, info: ValidationInfo) -> str:
        head, sep, key = v.partition("/")
        if not sep or not key:
            raise ValueError(f"must look like '<evaluator>/<key>', e.g. 'semantic/miou' (got {v!r})")
        specs = info.data.get("evaluators")
        names = {s if isinstance(s, str) else s["type"] for s in specs or ()}
        if specs is not None and head not in names:
            raise ValueError(f"{v!r} names evaluator {head!r}, not in eval.evaluators ({', '.join(sorted(names))})")
        return v


class ConfigSchema(Section):
    """A whole config; ``model`` and ``loss`` are only shape-checked here (see :func:`check_kwargs`)."""
    name: str | None = None
    description: str | None = None
    model: dict[str, Any] = {}
    loss: list[dict[str, Any]] | None = None
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


SECTIONS = tuple(ConfigSchema.model_fields)
PIXEL_STATS = {"pixel_mean": Annotated[list[float], Field(min_length=3, max_length=3)],
               "pixel_std": Annotated[list[PositiveFloat], Field(min_length=3, max_length=3)],
               "norm": Literal["bn", "gn", "frozen_bn"]}  # the keys every model section takes


# ---------------------------------------------------------------------------------------------------------
# messages

def suggest(key: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for the closest of ``choices``, else the list of them."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(choices) or '(none)'}"


def dotted(loc: Iterable[Any]) -> str:
    """``("data", "train_transforms", 2, "type")`` -> ``data.train_transforms[2].type``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _got(value: Any) -> str:
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def unknown_key(where: str, allowed: Iterable[str], owner: str = "") -> str:
    """``"train.bacth_size: unknown key; did you mean 'batch_size'?"``; ``owner`` names what takes the keys."""
    what = "unknown key" if "." in where else "unknown top-level key"
    return f"{where}: {what}{' for ' + owner if owner else ''}; {suggest(where.rpartition('.')[2], allowed)}"


def error_message(err: dict, where: str, allowed: Iterable[str] = ()) -> str:
    """One line for one pydantic error dict at the dotted key ``where`` (``allowed``: the keys valid there)."""
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return unknown_key(where, allowed)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a mapping"
    elif kind == "list_type":
        msg = "must be a list"
    elif kind in ("value_error", "assertion_error"):
        return f"{where}: {msg.partition(', ')[2]}"
    return f"{where}: {msg}{_got(err.get('input'))}"


# ---------------------------------------------------------------------------------------------------------
# registry-built sections: keys = the parameters of the callable

SKIP = ("self", "meta", "num_classes")


def check_type(registry, name: Any, where: str) -> Any:
    """``registry.get(name)``, with a suggestion when the name is unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: needs a {registry.kind} name{_got(name)}")
    if name not in registry:
        raise ConfigError(f"{where}: unknown {registry.kind} {name!r}; {suggest(name, registry.names())}")
    return registry.get(name)


def _init_of(obj):
    """A class's own ``__init__`` (None when inherited from ``object`` or torch); a function itself."""
    if not inspect.isclass(obj):
        return obj
    for klass in obj.__mro__:
        if "__init__" in vars(klass):
            return None if klass is object or klass.__module__.startswith("torch") else klass.__init__
    return None


def _hints(fn) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only disables the type checks
        return {}


def config_params(obj, skip: tuple[str, ...] = SKIP) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """The config keys ``obj`` (a class or function) accepts: ``(parameters, type hints, open)``.

    ``**kwargs`` are followed to ``obj.config_forwards_to`` or, for a builder function, to the class its
    return annotation names (whose positional parameters without a default the forwarder fills);
    ``open`` is True when they cannot be followed (any key is then accepted)."""
    fn = _init_of(obj)
    if fn is None:
        return {}, {}, False
    params, hints, is_open = {}, _hints(fn), False
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            target = getattr(obj, "config_forwards_to", None) or hints.get("return")
            if target is type(None) or not (inspect.isclass(target) or inspect.isfunction(target)):
                is_open = True
                continue
            sub, sub_hints, sub_open = config_params(target, skip)
            sub = {k: q for k, q in sub.items()
                   if not (q.kind is q.POSITIONAL_OR_KEYWORD and q.default is q.empty)}
            params.update({k: q for k, q in sub.items() if k not in params})
            hints.update({k: h for k, h in sub_hints.items() if k not in hints})
            is_open |= sub_open
        else:
            params[p.name] = p
    return params, {k: v for k, v in hints.items() if k in params}, is_open


@functools.lru_cache(maxsize=512)
def _adapter(hint) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # noqa: BLE001 - a type pydantic cannot check is not checked
        return None


def check_value(value: Any, hint: Any, where: str) -> None:
    """Raise a :class:`ConfigError` naming ``where`` if ``value`` does not fit ``hint`` (lax mode)."""
    try:
        adapter = _adapter(hint)
    except TypeError:  # unhashable hint
        adapter = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    if adapter is None:
        return
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(error_message(err, dotted((where, *err["loc"])))) from None


def check_kwargs(kwargs: dict, obj, where: str, owner: str, *, extra: dict[str, Any] | None = None,
                 skip: tuple[str, ...] = SKIP) -> None:
    """Check the keys of ``kwargs`` (the config mapping at ``where``, e.g. ``model``) against the parameters
    of ``obj`` plus ``extra`` (``{key: type hint}``), and their types; ``owner`` names ``obj`` in messages
    (``"model 'ce2p'"``). ``None`` is accepted for a parameter whose default is ``None``."""
    params, hints, is_open = config_params(obj, skip)
    hints = {**hints, **(extra or {})}
    allowed = set(params) | set(extra or {})
    for key, value in kwargs.items():
        if key not in allowed:
            if is_open:
                continue
            raise ConfigError(unknown_key(f"{where}.{key}", allowed, owner))
        if value is None and key in params and params[key].default is None:
            continue
        if key in hints:
            check_value(value, hints[key], f"{where}.{key}")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: missing; {owner} needs it")
