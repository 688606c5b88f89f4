"""Export (ONNX with dynamic batch/height/width, TorchScript, slim .pt) and the ONNX Runtime backend: the exported
networks agree with PyTorch at sizes other than the traced one, for every packaged semantic model type and for the
instance models' dense networks (AIParsing, the unified framework)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hparse
from hparse import config as C
from hparse.cli import app
from hparse.engine import backends
from hparse.engine.export import (
    TRACE_SIZE,
    check_exportable,
    export_checkpoint,
    export_onnx,
    export_torchscript,
    network_output_names,
)
from hparse.engine.inference import Predictor
from hparse.errors import HParseError
from hparse.labels import get_meta
from hparse.models import build_model
from hparse.models.meta_arch import InstanceParsingModel

from .test_aiparsing import TINY as TINY_AIPARSING
from .test_unified import TINY as TINY_UNIFIED

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

META = get_meta("ccp15")
# image sizes -> network inputs at long side 128 (padded to multiples of 32): 96x128 (81x128 padded),
# 128x96 (128x91 padded), 128x128; none is the traced TRACE_SIZE
IMAGE_SIZES = [(95, 150), (211, 150), (64, 64)]
MIN_AGREEMENT = 0.999


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HPARSE_CACHE", str(tmp_path / "cache"))


def light_model(config: str):
    """A packaged light config with random weights (the shipped default: its real weights)."""
    if config == "default":
        return hparse.load("default", backend="torch").model
    torch.manual_seed(0)
    cfg = C.load_config(config)
    return build_model(cfg["model"], get_meta(cfg["data"]["label_set"])).eval()


def network_inputs(model) -> list[torch.Tensor]:
    """What the predictor feeds a backend: photos resized to long side 128, padded to multiples of 32."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*s, 3), dtype=np.uint8) for s in IMAGE_SIZES]
    resizer = Predictor(model, long_side=128).resizer
    inputs = [resizer.batch([im])[0] for im in images]
    assert inputs[0].shape[-2:] == (96, 128) and inputs[1].shape[-2:] == (128, 96)
    assert all(tuple(x.shape[-2:]) != TRACE_SIZE for x in inputs)
    return inputs + [resizer.batch(images[:2])[0]]  # and a batch of two


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a.argmax(1) == b.argmax(1)).mean())


@pytest.mark.parametrize("config", ["default", "acenet_light_ccp", "cnif_light_ccp", "mman_light_ccp"])
def test_onnx_agrees_with_pytorch_at_other_sizes(config, tmp_path):
    model = light_model(config)
    path = export_onnx(model, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = network_output_names(model)
    assert [o.name for o in session.get_outputs()] == list(names) and names[0] == "parsing"
    assert set(names[1:]) == set(model.extra_outputs) & set(names)
    for x in network_inputs(model):
        with torch.no_grad():
            ref = model.network(model.normalize(x))
        outs = dict(zip(names, session.run(None, {"image": x.numpy()})))
        assert agreement(outs["parsing"], ref["parsing"].numpy()) >= MIN_AGREEMENT
        for name in names[1:]:
            np.testing.assert_allclose(outs[name], ref[name].numpy(), rtol=1e-3, atol=1e-3)


def test_onnx_metadata_and_input_contract(tmp_path):

    model = light_model("cnif_light_ccp")
    proto = onnx.load(str(export_onnx(model, tmp_path / "net.onnx")))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hparse.label_set"] == "ccp15" and json.loads(meta["hparse.classes"]) == list(META.classes)
    assert meta["hparse.outputs"] == "parsing,level2,level3,gates" and "0..255" in meta["hparse.input"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch.jit.load: TorchScript is deprecated upstream
def test_torchscript_agrees_with_pytorch(tmp_path):
    model = light_model("default")
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "net.ts")))
    for x in network_inputs(model):
        with torch.no_grad():
            assert agreement(traced(x)[0].numpy(), model.network(model.normalize(x))["parsing"].numpy()) >= 0.999


def test_export_cli_formats_and_refusals(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["export", "default", str(tmp_path / "m.onnx"), "--format", "onnx"])
    assert res.exit_code == 0 and "opset 17" in res.output, res.output
    assert (tmp_path / "m.onnx").is_file()
    res = runner.invoke(app, ["export", "default", str(tmp_path / "m.pt"), "--half"])
    assert res.exit_code == 0 and torch.load(tmp_path / "m.pt", weights_only=True)["label_set"] == "ccp15"
    for args, why in [([str(tmp_path), "--format", "onnx"], "is a folder"),
                      ([str(tmp_path / "missing" / "m.onnx"), "--format", "onnx"], "does not exist"),
                      ([str(tmp_path / "m.tflite"), "--format", "tflite"], "--format must be one of"),
                      ([str(tmp_path / "m2.onnx"), "--format", "onnx", "--half"], "--format pt only")]:
        res = runner.invoke(app, ["export", "default", *args])
        assert res.exit_code != 0 and why in res.output, res.output


def test_instance_models_are_refused():
    class Instances(InstanceParsingModel):
        def network(self, x):
            return {"parsing": x}

    with pytest.raises(HParseError, match="instance model without an exportable dense network"):
        check_exportable(Instances(META))


def test_export_checkpoint_rejects_unknown_format(tmp_path):
    with pytest.raises(HParseError, match="unknown export format"):
        export_checkpoint("default", tmp_path / "x.bin", "tflite")


# -- the onnxruntime backend ------------------------------------------------------------------------------------
def photos():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(150, 97), (120, 200)]]


@pytest.mark.parametrize("tta", [False, True])
def test_onnxruntime_backend_gives_the_torch_labels(tta):
    torch_parser = hparse.load("default", backend="torch", tta=tta)
    ort_parser = hparse.load("default", backend="onnxruntime", tta=tta)
    assert ort_parser.backend == "onnxruntime" and ort_parser.predictor.runner.name == "onnxruntime"
    assert ort_parser.predictor.scales == torch_parser.predictor.scales
    for a, b in zip(ort_parser.predict(photos()), torch_parser.predict(photos())):
        assert (a == b).mean() >= MIN_AGREEMENT
    ea, eb = ort_parser.predict_extras(photos()[0]), torch_parser.predict_extras(photos()[0])
    assert ea.keys() == eb.keys() == {"boundary"}
    np.testing.assert_allclose(np.asarray(ea["boundary"]), np.asarray(eb["boundary"]), atol=1e-4)


def test_backend_choice_and_cache(tmp_path, monkeypatch):
    assert hparse.load("default").backend == "onnxruntime-int8"   # None: the fastest installed (int8 ships)
    monkeypatch.setattr(backends, "shipped_int8", lambda model: None)
    assert hparse.load("default").backend == "onnxruntime"        # without it, float32
    cached = sorted((tmp_path / "cache").glob("*.onnx"))
    assert [p.name.startswith("tflite-") for p in cached] == [False, True]   # the network and the person prior
    cached = cached[:1]
    monkeypatch.setattr(backends, "export_onnx", lambda *a: pytest.fail("exported again"))
    assert hparse.load("default", backend="onnxruntime").predictor.runner.path == cached[0]
    with pytest.raises(HParseError, match="unknown backend"):
        hparse.load("default", backend="tensorrt")
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert hparse.load("default").backend == "torch"


def test_int8_is_selected_only_above_the_agreement_floor():
    parser = hparse.load("default", backend="onnxruntime")
    calibration = photos()[:1]
    with pytest.raises(HParseError, match="int8 not selected"):
        parser.use_int8(calibration, check=photos(), min_agreement=1.01)
    assert parser.backend == "onnxruntime" and parser.predictor.runner.name == "onnxruntime"
    agreement = parser.use_int8(calibration, check=photos(), min_agreement=0.0)
    assert 0.9 < agreement <= 1 and parser.predictor.runner.name == "onnxruntime-int8"
    graph = onnx.load(str(parser.predictor.runner.path)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    k = backends.FLOAT_CONVS                     # the convolutions nearest the image stay float32, the rest int8
    assert all(made_by.get(x) != "DequantizeLinear" for c in convs[:k] for x in c.input[:2])
    assert all(made_by.get(x) == "DequantizeLinear" for c in convs[k:] for x in c.input[:2])


def test_the_shipped_int8_network_agrees_with_float32_and_is_found_by_the_weights():
    """The calibrated int8 network shipped for ``default`` (scripts/ship_int8.py: 99.5 % of CCP val's pixels,
    single scale) runs by default; on the example photos it keeps >= 99 % of float32's labels, with TTA too."""
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))
    for tta in (False, True):
        int8 = hparse.load("default", backend="onnxruntime-int8", tta=tta)
        assert int8.predictor.runner.name == "onnxruntime-int8"
        assert int8.predictor.runner.path == backends.shipped_int8(int8.model)
        fp32 = hparse.load("default", backend="onnxruntime", tta=tta)
        ex = [str(p) for p in examples]
        assert backends.label_agreement(int8.predict(ex), fp32.predict(ex)) >= backends.MIN_INT8_AGREEMENT
    other = hparse.load("default", backend="torch")
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)               # other weights: no shipped int8 network
    assert backends.shipped_int8(other.model) is None
    with pytest.raises(HParseError, match="no calibrated int8 network ships"):
        backends.resolve_backend("onnxruntime-int8", other.model, "cpu")


# -- instance models: their dense network (backbone, FPN, detector head) ------------------------------------------
# network inputs: none is the traced TRACE_SIZE, two have unequal sides (one taller, one wider)
INSTANCE_SIZES = [(96, 128), (160, 96), (128, 128)]
INSTANCE_MODELS = {
    "aiparsing": (TINY_AIPARSING, "fcos.head.cls_logits",
                  ["p3", "p4", "p5"] + [f"fcos_{o}_{lv}" for lv in ("p3", "p4", "p5")
                                         for o in ("logits", "distances", "centerness")]),
    "unified": (TINY_UNIFIED, "rpn.head.objectness",
                ["p2", "p3", "p4", "p5", "p6"] + [f"rpn_{o}_{lv}" for lv in ("p3", "p4", "p5", "p6")
                                                   for o in ("objectness", "deltas")]),
}


@pytest.fixture
def one_thread():
    """Toy models gain nothing from threads (and the machine's cores may be busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_instance_model(kind: str):
    """The tests' tiny model of ``kind``, its detector's score predictor re-drawn wider (std 1, not 0.01) so
    that the best location of a level is no near-tie that rounding could flip."""
    config, scores, _ = INSTANCE_MODELS[kind]
    torch.manual_seed(0)
    model = build_model(config, META).eval()
    torch.nn.init.normal_(model.get_submodule(scores).weight, std=1.0)
    return model


def instance_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, h, w, generator=g) * 255 for h, w in INSTANCE_SIZES]
    assert all(tuple(x.shape[-2:]) != TRACE_SIZE for x in inputs)
    return inputs + [torch.rand(2, 3, *INSTANCE_SIZES[1], generator=g) * 255]   # and a batch of two


def dense_outputs(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.exported_outputs(model.network(model.normalize(x))).items()}


def assert_dense_outputs_agree(outs: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Every output of the same shape (a size traced as a constant changes it or fails) and values within 1e-3
    of the output's scale; the best location of each detector score map (FCOS class logits, RPN objectness)
    the same."""
    assert list(outs) == list(ref)
    for name, r in ref.items():
        assert outs[name].shape == r.shape, name
        np.testing.assert_allclose(outs[name], r, rtol=1e-3, atol=1e-3 * max(float(np.abs(r).max()), 1e-6),
                                   err_msg=name)
        if name.startswith(("fcos_logits_", "rpn_objectness_")):
            best = [a.reshape(*a.shape[:a.ndim - 2], -1).argmax(-1) if a.ndim == 4 else a.argmax(-1)
                    for a in (outs[name], r)]
            np.testing.assert_array_equal(best[0], best[1], err_msg=name)


@pytest.mark.parametrize("kind", list(INSTANCE_MODELS))
def test_instance_dense_network_onnx_agrees_with_pytorch_at_other_sizes(kind, tmp_path, one_thread):

    model = tiny_instance_model(kind)
    names = INSTANCE_MODELS[kind][2]
    check_exportable(model)
    path = export_onnx(model, tmp_path / "net.onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hparse.task"] == "instance" and meta["hparse.outputs"] == ",".join(names)
    assert "dense network only" in meta["hparse.contract"] and "into people is hparse's" in meta["hparse.contract"]
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert dims[names[0]] == ["batch", 32, f"{names[0]}_height", f"{names[0]}_width"]
    if kind == "unified":   # anchors per level follow the input size too
        assert dims["rpn_objectness_p3"] == ["batch", "rpn_objectness_p3_1"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names
    for x in instance_inputs():
        ref = dense_outputs(model, x)
        assert list(ref) == names
        assert_dense_outputs_agree(dict(zip(names, session.run(None, {"image": x.numpy()}))), ref)


@pytest.mark.parametrize("kind", list(INSTANCE_MODELS))
@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch.jit.load: TorchScript is deprecated upstream
def test_instance_dense_network_torchscript_agrees_with_pytorch(kind, tmp_path, one_thread):
    model = tiny_instance_model(kind)
    names = INSTANCE_MODELS[kind][2]
    files = {"hparse.json": ""}
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "net.ts")), _extra_files=files)
    assert json.loads(files["hparse.json"])["hparse.outputs"] == ",".join(names)
    for x in instance_inputs():
        with torch.no_grad():
            outs = dict(zip(names, (t.numpy() for t in traced(x))))
        assert_dense_outputs_agree(outs, dense_outputs(model, x))


def test_export_cli_writes_a_shipped_instance_models_dense_network(tmp_path, one_thread):

    res = CliRunner().invoke(app, ["export", "aiparsing_cpu_ccpmulti", str(tmp_path / "m.onnx"), "--format", "onnx"])
    assert res.exit_code == 0 and "opset 17" in res.output, res.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["hparse.outputs"].startswith("p3,") and "fcos_logits_p3" in meta["hparse.outputs"]
