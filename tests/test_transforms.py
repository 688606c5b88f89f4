"""Transforms: label-swapping flips, CE2P affine and the tracked geometry, alignment of spatial keys."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hparse.data.transforms import (
    ColorJitter,
    Compose,
    GaussianBlur,
    HFlip,
    LowQuality,
    Pad,
    RandomAffine,
    RandomCrop,
    RandomGrayscale,
    RandomRotate,
    RandomScale,
    Resize,
    ToTensor,
    box2cs,
    build_transforms,
    get_affine_transform,
)
from hparse.errors import ConfigError
from hparse.io.image import read_label
from hparse.labels import get_meta

LIP = get_meta("lip")
PAL = np.random.default_rng(123).integers(0, 256, (256, 3)).astype(np.uint8)


def blocks(h=96, w=128, cell=16, seed=0, n=20) -> np.ndarray:
    """Label of constant cells with random classes (edges are rare, so warps keep most pixels)."""
    g = np.random.default_rng(seed).integers(0, n, (h // cell + 1, w // cell + 1)).astype(np.uint8)
    return np.kron(g, np.ones((cell, cell), np.uint8))[:h, :w]


def make_sample(h=96, w=128, seed=0) -> dict:
    label = blocks(h, w, seed=seed)
    rng = np.random.default_rng(seed)
    joints = np.c_[rng.uniform(0, w - 1, 16), rng.uniform(0, h - 1, 16), rng.integers(0, 2, 16)]
    joints[3] = np.nan
    return {
        "id": "x", "image": PAL[label], "label": label, "human_ids": (label % 3).astype(np.uint8),
        "instance_ids": (label % 7).astype(np.uint8), "person_labels": [label.copy()],
        "instances": np.array([[1, 14, 1], [2, 17, 1], [3, 5, 2]], np.int64),
        "joints": joints.astype(np.float32), "meta": {"orig_size": (h, w)},
    }


def eq_nan(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def unwarp_label(label: np.ndarray, meta: dict, orig_size) -> np.ndarray:
    """A transformed label map back to the original ``(H, W)`` through the tracked ``meta["affine"]["matrix"]``
    (original pixel -> current pixel), nearest sampling."""
    m = cv2.invertAffineTransform(np.asarray(meta["affine"]["matrix"], np.float64))
    return cv2.warpAffine(label, m, (orig_size[1], orig_size[0]), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def fixed_affine(size) -> RandomAffine:
    """CE2P's whole-image warp to ``size`` without the random scale and rotation."""
    return RandomAffine(size, scale=0.0, rotation=0.0, rotation_p=0.0)


# --- flip -----------------------------------------------------------------------------

def test_hflip_reproduces_cihp_reversed_labels(cihp_samples_root):
    flip = HFlip("cihp", p=1.0)
    files = sorted((cihp_samples_root / "Category_ids").glob("*.png"))
    assert len(files) == 5
    for f in files:
        label = read_label(f)
        out = flip({"image": np.zeros(label.shape + (3,), np.uint8), "label": label, "meta": {}})
        rev = read_label(cihp_samples_root / "Category_rev_ids" / f.name)
        assert out["label"].dtype == np.uint8 and np.array_equal(out["label"], rev), f.name


def test_flip_twice_is_identity():
    s = make_sample()
    out = Compose([HFlip(LIP, p=1.0), HFlip(LIP, p=1.0)])(s, np.random.default_rng(0))
    for k in ("image", "label", "human_ids", "instance_ids", "instances"):
        assert np.array_equal(out[k], s[k]), k
    assert np.array_equal(out["person_labels"][0], s["person_labels"][0])
    np.testing.assert_allclose(out["joints"], s["joints"], atol=1e-4)  # float32 W-1-x rounding
    assert not out["meta"]["flipped"]
    np.testing.assert_allclose(out["meta"]["affine"]["matrix"], np.eye(3)[:2])


def test_flip_swaps_labels_joints_and_instances():
    s = make_sample()
    W = s["image"].shape[1]
    out = HFlip(LIP, p=1.0)(s)
    assert np.array_equal(out["image"], s["image"][:, ::-1])
    lut = LIP.flip_lut()
    assert np.array_equal(out["label"], lut[s["label"][:, ::-1]])
    assert np.array_equal(out["human_ids"], s["human_ids"][:, ::-1])  # ids are not class ids
    assert out["instances"][:, 1].tolist() == [15, 16, 5]
    for a, b in LIP.joint_flip_pairs:
        for i, j in ((a, b), (b, a)):
            assert eq_nan(out["joints"][i, 0], W - 1 - s["joints"][j, 0])
            assert eq_nan(out["joints"][i, 1:], s["joints"][j, 1:])
    assert eq_nan(out["joints"][6:10, 0], W - 1 - s["joints"][6:10, 0])  # centre joints stay
    assert out["meta"]["flipped"] and "flipped" not in s["meta"]  # input untouched


def test_flip_probability_and_joint_mismatch():
    s = make_sample()
    assert np.array_equal(HFlip(LIP, p=0.0)(s)["label"], s["label"])
    with pytest.raises(ValueError, match="joints"):
        HFlip("cihp", p=1.0)(s)  # CIHP defines no joints: cannot swap them


# --- CE2P affine -------------------------------------------------------------------------

def test_get_affine_transform_matches_ce2p_construction():
    c, s = box2cs((0, 0, 299, 199), 1.0)  # landscape box padded to a square
    np.testing.assert_allclose(c, [149.5, 99.5])
    np.testing.assert_allclose(s, [299, 299])
    m = get_affine_transform(c, s, 0, (473, 473))
    k = 473 / 299
    np.testing.assert_allclose(m, [[k, 0, 236.5 - 149.5 * k], [0, k, 236.5 - 99.5 * k]], atol=1e-4)
    mr = get_affine_transform(c, s, 30, (384, 256))
    np.testing.assert_allclose(mr @ [*c, 1], [128, 192], atol=1e-3)  # centre -> output centre
    np.testing.assert_allclose(np.linalg.det(mr[:, :2]), (256 / 299) ** 2, rtol=1e-4)
    np.testing.assert_allclose(get_affine_transform(c, s, 30, (384, 256), inv=True),
                               __import__("cv2").invertAffineTransform(mr), atol=1e-3)


@pytest.mark.parametrize("hw", [(96, 128), (131, 77), (60, 60)])
def test_affine_at_the_image_size_is_the_identity(hw):
    s = make_sample(*hw)
    out = fixed_affine(hw)(s, np.random.default_rng(0))
    assert np.array_equal(out["label"], s["label"]) and np.array_equal(out["image"], s["image"])
    np.testing.assert_allclose(out["meta"]["affine"]["matrix"], np.eye(3)[:2], atol=1e-6)


def test_affine_records_and_tracks_flip():
    s = make_sample()
    out = Compose([HFlip(LIP, p=1.0), fixed_affine((96, 128))])(s, np.random.default_rng(0))
    back = unwarp_label(out["label"], out["meta"], (96, 128))
    assert np.array_equal(back, LIP.flip_lut()[s["label"]])  # flip undone geometrically, classes swapped
    assert set(out["meta"]["affine"]) >= {"center", "scale", "rotation", "out_size", "matrix"}


def test_resize_pad_tracking_inverts_exactly():
    s = make_sample(96, 128)
    out = Compose([Resize(long_side=256), Pad((256, 256), position="center")])(s, np.random.default_rng(0))
    assert out["label"].shape == (256, 256)
    assert (out["label"][:32] == 255).all() and (out["human_ids"][:32] == 0).all()
    assert np.array_equal(unwarp_label(out["label"], out["meta"], (96, 128)), s["label"])


# --- alignment of spatial keys -------------------------------------------------------------

def _check_aligned(out):
    lab = out["label"]
    assert lab.shape == out["image"].shape[:2] == out["human_ids"].shape == out["person_labels"][0].shape
    fg = lab != 255
    # every label-like map went through the same nearest warp
    assert np.array_equal(out["person_labels"][0], lab)
    assert np.array_equal(out["human_ids"][fg], lab[fg] % 3)
    assert np.array_equal(out["instance_ids"][fg], lab[fg] % 7)
    # image: bilinear inside uniform 3x3 neighbourhoods equals the label's colour
    pad = np.pad(lab, 1, constant_values=255)  # the output border may blend with the fill
    win = np.stack([pad[i:i + lab.shape[0], j:j + lab.shape[1]] for i in range(3) for j in range(3)])
    interior = (win == lab).all(0) & fg
    assert interior.mean() > 0.3
    diff = np.abs(out["image"][interior].astype(int) - PAL[lab[interior]].astype(int))
    assert diff.max() <= 2
    # joints: the tracked matrix moved them with the pixels
    m = out["meta"]["affine"]["matrix"]
    orig = make_sample()["joints"]
    if out["meta"].get("flipped"):
        orig = orig[LIP.joint_flip_permutation()]
    np.testing.assert_allclose(out["joints"][:, :2], orig[:, :2] @ m[:, :2].T + m[:, 2], atol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_random_pipelines_keep_keys_aligned(seed):
    rng = np.random.default_rng(seed)
    lut = LIP.flip_lut()
    s = make_sample()
    # keep id maps consistent with class-swapped labels under flips: use flip-invariant ids
    s["label"] = np.where(lut[s["label"]] != s["label"], 0, s["label"]).astype(np.uint8)
    s["image"], s["person_labels"] = PAL[s["label"]], [s["label"].copy()]
    s["human_ids"], s["instance_ids"] = s["label"] % 3, s["label"] % 7
    for t in (RandomAffine((64, 80), rotation_p=1.0), RandomScale((0.6, 1.6)),
              RandomCrop((70, 90), cat_max_ratio=0.9), RandomRotate(30, p=1.0)):
        out = Compose([t, HFlip(LIP, p=0.5)])(s, rng)
        _check_aligned(out)


def test_random_affine_draws():
    t = RandomAffine((64, 64), scale=0.25, rotation=30, rotation_p=0.6)
    rng = np.random.default_rng(0)
    draws = np.array([t.params(rng) for _ in range(2000)])
    assert draws[:, 0].min() >= 0.75 and draws[:, 0].max() <= 1.25
    assert np.abs(draws[:, 1]).max() <= 60 and 0.3 < (draws[:, 1] == 0).mean() < 0.5


def test_crop_and_pad_shapes():
    s = make_sample(50, 60)
    out = RandomCrop((64, 40))(s, np.random.default_rng(0))
    assert out["image"].shape == (64, 40, 3) and (out["label"][50:] == 255).all()
    assert (out["image"][50:] == 0).all()
    out = Pad((64, 64))(s)
    assert out["label"].shape == (64, 64) and np.array_equal(out["label"][:50, :60], s["label"])


# --- photometric, tensors, configs -------------------------------------------------------------

def test_color_jitter_keeps_dtype_and_changes_pixels():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    s = {"image": img, "label": np.zeros((40, 50), np.uint8), "meta": {}}
    for kw in ({"brightness": 0.4}, {"contrast": 0.5}, {"saturation": 0.5}, {"hue": 0.1},
               {"brightness": 0.1, "contrast": 0.5, "saturation": 0.5, "hue": 0.1}):
        out = ColorJitter(**kw)(s, np.random.default_rng(1))
        assert out["image"].dtype == np.uint8 and out["image"].shape == img.shape
        assert not np.array_equal(out["image"], img), kw
        assert out["label"] is s["label"]
    gray = np.repeat(img[..., :1], 3, axis=2)  # hue does not change gray pixels
    assert np.abs(ColorJitter(hue=0.5)({"image": gray, "meta": {}})["image"].astype(int) - gray).max() <= 1
    assert np.array_equal(ColorJitter(brightness=0.5, p=0.0)(s)["image"], img)


def test_gaussian_blur_softens_the_image_only():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    s = {"image": img, "label": np.zeros((40, 50), np.uint8), "meta": {}}
    out = GaussianBlur(sigma=(1.0, 2.0), p=1.0)(s, np.random.default_rng(1))
    assert out["image"].dtype == np.uint8 and out["image"].shape == img.shape and out["label"] is s["label"]
    assert np.diff(out["image"].astype(int), axis=1).std() < 0.5 * np.diff(img.astype(int), axis=1).std()
    assert np.array_equal(GaussianBlur(p=0.0)(s)["image"], img)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(sigma=(2.0, 1.0))
    step = build_transforms([{"type": "GaussianBlur", "sigma": [0.5, 1.0], "p": 1.0}])
    assert not np.array_equal(step(s, np.random.default_rng(0))["image"], img)


def test_random_grayscale_removes_colour_only():
    s = make_sample()
    out = RandomGrayscale(p=1.0)(s, np.random.default_rng(0))
    img = out["image"]
    assert img.shape == s["image"].shape and img.dtype == np.uint8 and out["label"] is s["label"]
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
    expected = s["image"].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(img[..., 0].astype(int) - expected).max() <= 1
    assert np.array_equal(RandomGrayscale(p=0.0)(s)["image"], s["image"])


def test_low_quality_shrinks_detail_and_keeps_size():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8), (160, 120), interpolation=cv2.INTER_NEAREST)
    s = {"image": img, "label": np.zeros((120, 160), np.uint8), "meta": {}}
    out = LowQuality(scale=(0.25, 0.25), quality=(20, 20), p=1.0)(s, np.random.default_rng(1))
    assert out["image"].shape == img.shape and out["image"].dtype == np.uint8 and out["label"] is s["label"]
    # the hard cell edges are gone, the colours stay roughly where they were
    assert np.abs(np.diff(out["image"].astype(int), axis=1)).max() < np.abs(np.diff(img.astype(int), axis=1)).max()
    assert np.abs(out["image"].astype(int) - img).mean() < 40
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 200
    kept = LowQuality(p=1.0)({"image": red, "meta": {}}, np.random.default_rng(0))["image"]
    assert kept[..., 0].mean() > 180 and kept[..., 2].mean() < 20  # RGB order kept through the JPEG round trip
    assert np.array_equal(LowQuality(p=0.0)(s)["image"], img)
    with pytest.raises(ValueError, match="scale"):
        LowQuality(scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="quality"):
        LowQuality(quality=(0, 50))


def test_to_tensor_keeps_pixel_values():
    s = make_sample(32, 48)
    out = ToTensor()(s)
    x = out["image"]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 32, 48)
    # CHW, values unchanged (0..255): the model normalises its input itself
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), s["image"].astype(np.float32))
    assert x.max() > 1.0
    assert out["label"].dtype == torch.int64 and out["joints"].dtype == torch.float32
    assert out["person_labels"][0].dtype == torch.int64
    again = ToTensor()(out)
    assert torch.equal(again["image"], x)


def test_build_transforms_from_config_and_seeding():
    cfg = [{"type": "RandomAffine", "size": [64, 64], "scale": 0.25, "rotation": 30, "rotation_p": 0.6},
           {"type": "HFlip", "p": 0.5},
           {"type": "ColorJitter", "brightness": 0.1, "contrast": 0.5, "saturation": 0.5, "hue": 0.1},
           {"type": "EdgeTarget"}, {"type": "ToTensor"}]
    pipe = build_transforms(cfg, "lip")
    assert isinstance(pipe.transforms[1], HFlip) and pipe.transforms[1].meta is LIP
    s = make_sample()
    a, b = pipe(s, np.random.default_rng(7)), pipe(s, np.random.default_rng(7))
    for k in ("image", "label", "edge", "joints"):
        assert torch.equal(torch.nan_to_num(a[k]), torch.nan_to_num(b[k])), k
    np.testing.assert_array_equal(a["meta"]["affine"]["matrix"], b["meta"]["affine"]["matrix"])
    c = pipe(s, np.random.default_rng(8))
    assert not torch.equal(a["image"], c["image"])
    with pytest.raises(ConfigError):
        build_transforms([{"type": "NoSuchStep"}], "lip")
    with pytest.raises(ConfigError, match="ToTensor"):  # the removed step names its replacement
        build_transforms([{"type": "Normalize"}], "lip")
    with pytest.raises(ValueError):
        build_transforms([{"type": "HFlip"}])  # a flip without meta would not swap labels
