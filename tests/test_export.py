"""Export (ONNX with dynamic batch/height/width, TorchScript, slim .pt) and the ONNX Runtime backend: the exported
networks agree with PyTorch at sizes other than the traced one, for every packaged semantic model type."""

from __future__ import annotations

import json

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

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

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
    import onnx

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

    with pytest.raises(HParseError, match="instance model"):
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
    assert hparse.load("default").backend == "onnxruntime"   # None: the fastest installed
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 1
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
