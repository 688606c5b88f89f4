"""Detection ops against slow, obviously-correct loop references (torchvision semantics), plus edge cases:
boxes crossing the border, zero-size boxes and empty inputs."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hparse.ops import (
    BoxCoder,
    assign_fpn_levels,
    batched_nms,
    box_area,
    box_iou,
    clip_boxes,
    crop_and_resize_labels,
    generalized_box_iou,
    giou_loss,
    iou_loss,
    ltrb_decode,
    ltrb_encode,
    multilevel_roi_align,
    nms,
    paste_roi_maps,
    roi_align,
    sigmoid_focal_loss,
)

torch.set_num_threads(1)


# -- references ------------------------------------------------------------------------------------
def ref_bilinear(fmap, y, x):
    """torchvision's ``bilinear_interpolate`` for one point of one (H, W) map."""
    h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * fmap[y_low][x_low] + hy * lx * fmap[y_low][x_high]
            + ly * hx * fmap[y_high][x_low] + ly * lx * fmap[y_high][x_high])


def ref_roi_align(feats, rois, out_hw, scale, sampling_ratio, aligned):
    oh, ow = out_hw
    k, c = len(rois), feats.shape[1]
    out = np.zeros((k, c, oh, ow))
    f = feats.double().numpy()
    for n, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        off = 0.5 if aligned else 0.0
        sx, sy, ex, ey = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / oh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / ow)
        count = max(gh * gw, 1)
        for ch in range(c):
            for ph in range(oh):
                for pw in range(ow):
                    acc = 0.0
                    for iy in range(gh):
                        y = sy + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sx + pw * bw + (ix + 0.5) * bw / gw
                            acc += ref_bilinear(f[int(b), ch], y, x)
                    out[n, ch, ph, pw] = acc / count
    return torch.from_numpy(out)


def ref_inter_union(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter, (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter


def ref_iou(a, b):
    inter, union = ref_inter_union(a, b)
    return inter / union if union > 0 else float("nan")


def ref_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    keep = []
    for i in order:
        if all(not ref_iou(boxes[i], boxes[j]) > thr for j in keep):
            keep.append(i)
    return keep


def random_rois(g, k, batch, h, w, scale):
    """RoIs in image pixels for an (h, w) map at ``scale``: many cross the border, a few are degenerate or
    inverted."""
    hi, wi = h / scale, w / scale
    x1 = torch.rand(k, generator=g, dtype=torch.float64) * wi * 1.2 - 0.1 * wi
    y1 = torch.rand(k, generator=g, dtype=torch.float64) * hi * 1.2 - 0.1 * hi
    bw = torch.rand(k, generator=g, dtype=torch.float64) * wi * 0.7
    bh = torch.rand(k, generator=g, dtype=torch.float64) * hi * 0.7
    x1[0], y1[0] = wi / 2, hi / 2  # zero-size: a point inside the map and a vertical segment
    bw[:2] = 0
    bh[0] = 0
    bw[2] = -0.2 * wi  # inverted (x2 < x1)
    b = torch.randint(0, batch, (k,), generator=g).double()
    return torch.stack([b, x1, y1, x1 + bw, y1 + bh], dim=1)


# -- roi_align -----------------------------------------------------------------------------------
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_roi_align_matches_reference(aligned, sampling_ratio, scale):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = random_rois(g, 12, 2, 9, 11, scale)
    expected = ref_roi_align(feats, rois, (3, 4), scale, sampling_ratio, aligned)
    got = roi_align(feats, rois, (3, 4), scale, sampling_ratio, aligned)
    assert got.shape == (12, 3, 3, 4) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    got32 = roi_align(feats.float(), rois.float(), (3, 4), scale, sampling_ratio, aligned)
    torch.testing.assert_close(got32.double(), expected, atol=1e-5, rtol=0)
    if aligned:  # the point and the inverted RoI have no samples at all (adaptive) -> 0
        if sampling_ratio <= 0:
            assert got[0].abs().max() == 0 and got[2].abs().max() == 0
    else:  # legacy mode samples a 1x1 area
        assert got[0].abs().max() > 0


def test_roi_align_edge_cases():
    feats = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    assert roi_align(feats, torch.zeros(0, 5), 7).shape == (0, 2, 7, 7)
    # RoI far outside the map: every sample has x > W -> zeros
    out = roi_align(feats, torch.tensor([[0.0, 50, 1, 60, 4]]), 2, sampling_ratio=2)
    assert out.abs().max() == 0
    # a whole-map RoI, aligned, 1 sample per bin at pixel centres = the map itself
    out = roi_align(feats, torch.tensor([[0.0, 0, 0, 6, 5]]), (5, 6), sampling_ratio=1, aligned=True)
    torch.testing.assert_close(out[0], feats[0])
    # 1x1 map: everything reads the single pixel (clamped) unless out of range
    one = torch.full((1, 1, 1, 1), 3.0)
    out = roi_align(one, torch.tensor([[0.0, -0.5, -0.5, 0.9, 0.9]]), 2, sampling_ratio=2, aligned=False)
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 3.0))
    out = roi_align(one, torch.tensor([[0.0, -0.5, -0.5, 1.5, 1.5]]), 2, sampling_ratio=2, aligned=False)
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 1.5], [1.5, 0.75]]]]))  # samples at 1.25 > H read 0


def test_roi_align_gradcheck():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.2, 3.9], [1, -1.2, 1.1, 3.3, 6.5], [1, 2.0, 2.0, 2.0, 2.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 0.9, -1, True), (feats,))
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 1.0, 2, False), (feats,))


def test_chunking_does_not_change_results(monkeypatch):
    """Tiny chunk budgets (one RoI per chunk, sorted by footprint) give the same results, with and without
    autograd (the two ways chunks are put back in order)."""
    g = torch.Generator().manual_seed(9)
    feats = torch.randn(2, 4, 16, 12, generator=g, dtype=torch.float64)
    rois = random_rois(g, 20, 2, 16, 12, 1.0)
    maps = torch.randn(6, 3, 5, 4, generator=g, dtype=torch.float64)
    boxes = rois[:6, 1:] * 2
    expected = roi_align(feats, rois, (4, 3), 1.0, -1, True)
    pasted = paste_roi_maps(maps, boxes, (30, 25))
    for mod in ("hparse.ops.roi_align", "hparse.ops.crop_resize"):
        monkeypatch.setattr(importlib.import_module(mod), "_CHUNK_ELEMENTS", 1)
    torch.testing.assert_close(roi_align(feats, rois, (4, 3), 1.0, -1, True), expected)
    torch.testing.assert_close(roi_align(feats.requires_grad_(), rois, (4, 3), 1.0, -1, True), expected)
    torch.testing.assert_close(paste_roi_maps(maps, boxes, (30, 25)), pasted)
    torch.testing.assert_close(paste_roi_maps(maps.requires_grad_(), boxes, (30, 25)), pasted)


def test_assign_fpn_levels():
    sides = torch.tensor([1.0, 111.9, 112.0, 223.9, 224.0, 447.0, 448.0, 1000.0, 0.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)
    expected = [max(2, min(5, math.floor(4 + math.log2(s / 224 + 1e-6)))) for s in sides.tolist()]
    assert assign_fpn_levels(boxes, 2, 5).tolist() == expected == [2, 2, 3, 3, 4, 4, 5, 5, 2]


@pytest.mark.parametrize("aligned", [True, False])
def test_multilevel_roi_align_equals_per_level(aligned):
    g = torch.Generator().manual_seed(2)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [torch.randn(2, 3, 64 // 2 ** i, 48 // 2 ** i, generator=g) for i in range(4)]
    centre = torch.rand(40, 2, generator=g) * torch.tensor([192.0, 256.0])
    side = torch.exp(torch.rand(40, 1, generator=g) * math.log(800 / 8)) * 8  # 8 .. 800 px: every level
    side = side * (0.8 + 0.4 * torch.rand(40, 2, generator=g))
    batch = torch.randint(0, 2, (40, 1), generator=g).float()
    rois = torch.cat([batch, centre - side / 2, centre + side / 2], 1)
    out = multilevel_roi_align(feats, rois, (5, 4), scales, sampling_ratio=-1, aligned=aligned)
    levels = assign_fpn_levels(rois[:, 1:], 2, 5)
    assert set(levels.tolist()) == {2, 3, 4, 5}
    for lvl in range(2, 6):
        sel = levels == lvl
        ref = roi_align(feats[lvl - 2], rois[sel], (5, 4), scales[lvl - 2], -1, aligned)
        torch.testing.assert_close(out[sel], ref, atol=1e-5, rtol=0)
    assert multilevel_roi_align(feats, rois[:0], 7, scales).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError):
        multilevel_roi_align(feats, rois, 7, [1 / 4, 1 / 16, 1 / 8, 1 / 32])


# -- boxes -----------------------------------------------------------------------------------------
def test_box_iou_giou_area_clip():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, 4, generator=g, dtype=torch.float64) * 10
    a[:, 2:] += a[:, :2]
    b = torch.rand(5, 4, generator=g, dtype=torch.float64) * 10
    b[:, 2:] += b[:, :2]
    b[0] = a[0]
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert iou.shape == (6, 5) and iou[0, 0] == 1 and giou[0, 0] == 1
    for i in range(6):
        for j in range(5):
            p, q = a[i].tolist(), b[j].tolist()
            inter, union = ref_inter_union(p, q)
            enclosing = (max(p[2], q[2]) - min(p[0], q[0])) * (max(p[3], q[3]) - min(p[1], q[1]))
            assert abs(iou[i, j].item() - inter / union) < 1e-12
            assert abs(giou[i, j].item() - (inter / union - (enclosing - union) / enclosing)) < 1e-12
    assert box_area(torch.tensor([[1.0, 2, 4, 7], [3, 3, 3, 5]])).tolist() == [15.0, 0.0]
    assert box_iou(torch.zeros(0, 4), b.float()).shape == (0, 5)
    clipped = clip_boxes(torch.tensor([[-5.0, -1, 30, 8], [2, 3, 4, 50]]), (20, 25))
    assert clipped.tolist() == [[0.0, 0, 25, 8], [2, 3, 4, 20]]


def test_box_coder_roundtrip_and_reference():
    coder = BoxCoder()
    props = torch.tensor([[10.0, 20, 50, 80], [0, 0, 8, 4]], dtype=torch.float64)
    gt = torch.tensor([[12.0, 18, 60, 70], [1, -1, 5, 6]], dtype=torch.float64)
    d = coder.encode(gt, props)
    pw, ph, px, py = 40.0, 60.0, 30.0, 50.0
    gw, gh, gx, gy = 48.0, 52.0, 36.0, 44.0
    expected = [10 * (gx - px) / pw, 10 * (gy - py) / ph, 5 * math.log(gw / pw), 5 * math.log(gh / ph)]
    torch.testing.assert_close(d[0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(coder.decode(d, props), gt)
    # class-specific deltas (N, 4K) and the exp clamp
    dk = torch.cat([d, torch.zeros_like(d)], 1)
    torch.testing.assert_close(coder.decode(dk, props), torch.cat([gt, props], 1))
    huge = coder.decode(torch.tensor([[0.0, 0, 100, 100]], dtype=torch.float64), props[:1])
    assert huge[0, 2] - huge[0, 0] == pytest.approx(40 * 1000 / 16)
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_ltrb_roundtrip():
    pts = torch.tensor([[5.0, 6.0], [0.0, 0.0]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 7.0], [2.0, 3.0, 4.0, 5.0]])
    d = ltrb_encode(pts, boxes)
    assert d.tolist() == [[4.0, 4.0, 4.0, 1.0], [-2.0, -3.0, 4.0, 5.0]]
    torch.testing.assert_close(ltrb_decode(pts, d), boxes)


# -- nms -------------------------------------------------------------------------------------------
def test_nms_matches_greedy_reference():
    g = torch.Generator().manual_seed(4)
    for n, thr in ((60, 0.5), (200, 0.3), (200, 0.7), (600, 0.5)):  # 600: several IoU row blocks
        xy = torch.rand(n, 2, generator=g) * n / 4
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 20], 1)
        scores = torch.rand(n, generator=g)
        scores[5:9] = 0.5  # ties
        boxes[9, 2:] = boxes[9, :2]  # degenerate box: IoU NaN / 0, never suppresses nor is suppressed
        keep = nms(boxes, scores, thr)
        assert keep.dtype == torch.long
        assert keep.tolist() == ref_nms(boxes.tolist(), scores.tolist(), thr)
        assert 9 in keep.tolist()
        assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_nms_edge_cases_and_batched():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]
    assert nms(boxes, scores, 0.99).tolist() == [0, 1, 3]  # identical boxes: IoU 1 > 0.99
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(150, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(150, 2, generator=g) * 15], 1)
    scores = torch.rand(150, generator=g)
    cls = torch.randint(0, 3, (150,), generator=g)
    keep = batched_nms(boxes, scores, cls, 0.4).tolist()
    expected = []
    for c in range(3):
        idx = torch.nonzero(cls == c).flatten().tolist()
        expected += [idx[i] for i in ref_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.4)]
    assert keep == sorted(expected, key=lambda i: -scores[i].item())


# -- losses ----------------------------------------------------------------------------------------
def test_sigmoid_focal_loss_reference():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(4, 5, generator=g) > 0.7).double()
    out = sigmoid_focal_loss(logits, targets)
    for i in range(4):
        for j in range(5):
            x, t = logits[i, j].item(), targets[i, j].item()
            p = 1 / (1 + math.exp(-x))
            pt = p if t else 1 - p
            a = 0.25 if t else 0.75
            assert out[i, j].item() == pytest.approx(-a * (1 - pt) ** 2 * math.log(pt), abs=1e-10)
    assert sigmoid_focal_loss(logits, targets, reduction="sum").item() == pytest.approx(out.sum().item())
    assert sigmoid_focal_loss(logits, targets, reduction="mean").item() == pytest.approx(out.mean().item())
    plain = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0)
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))
    with pytest.raises(ValueError):
        sigmoid_focal_loss(logits, targets, reduction="avg")


def test_fcos_iou_losses_reference():
    pred = torch.tensor([[1.0, 2, 3, 4], [2, 2, 2, 2], [0.5, 5, 1, 1]], dtype=torch.float64)
    target = torch.tensor([[1.0, 2, 3, 4], [1, 3, 3, 1], [4, 1, 2, 3]], dtype=torch.float64)
    ious, gious = [], []
    for p, t in zip(pred.tolist(), target.tolist()):
        pa, ta = (p[0] + p[2]) * (p[1] + p[3]), (t[0] + t[2]) * (t[1] + t[3])
        inter = (min(p[0], t[0]) + min(p[2], t[2])) * (min(p[1], t[1]) + min(p[3], t[3]))
        enc = (max(p[0], t[0]) + max(p[2], t[2])) * (max(p[1], t[1]) + max(p[3], t[3])) + 1e-7
        union = pa + ta - inter
        iou = (inter + 1) / (union + 1)
        ious.append(iou)
        gious.append(iou - (enc - union) / enc)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    lw = [-math.log(i) for i in ious]
    assert iou_loss(pred, target).item() == pytest.approx(sum(lw) / 3)
    assert iou_loss(pred, target, w).item() == pytest.approx(sum(a * b for a, b in zip(w.tolist(), lw)) / 3.5)
    assert iou_loss(pred, target, linear=True).item() == pytest.approx(sum(1 - i for i in ious) / 3)
    assert giou_loss(pred, target).item() == pytest.approx(sum(1 - i for i in gious) / 3)
    assert giou_loss(pred[:1], target[:1]).item() == pytest.approx(0, abs=1e-7)  # identical pair
    assert giou_loss(pred, target, torch.zeros(3, dtype=torch.float64)).item() == pytest.approx(
        giou_loss(pred, target).item())  # zero weights -> plain mean
    assert iou_loss(pred[:0], target[:0]).item() == 0


# -- crop_and_resize_labels / paste_roi_maps -------------------------------------------------------
def ref_crop(label, box, hw, fill):
    h, w = hw
    H, W = label.shape
    x1, y1, x2, y2 = box
    out = np.full((h, w), fill, dtype=np.int64)
    for i in range(h):
        y = math.floor(y1 + (i + 0.5) * (y2 - y1) / h)
        for j in range(w):
            x = math.floor(x1 + (j + 0.5) * (x2 - x1) / w)
            if 0 <= y < H and 0 <= x < W:
                out[i, j] = label[y, x]
    return out


def test_crop_and_resize_labels_reference():
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 20, (6, 17, 13), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[2.0, 3, 10, 15], [-4.5, -3, 8.2, 9.9], [5, 5, 5, 5], [0.3, 16.2, 20, 30],
                          [100, 100, 120, 110], [0, 0, 13, 17]])
    out = crop_and_resize_labels(labels, boxes, (7, 5))
    assert out.shape == (6, 7, 5) and out.dtype == torch.uint8
    for n in range(6):
        expected = ref_crop(labels[n].numpy(), boxes[n].tolist(), (7, 5), 255)
        assert (out[n].numpy() == expected).all(), n
    assert (out[4] == 255).all() and (out[1] == 255).any()
    out = crop_and_resize_labels(labels.long(), boxes, 4, fill=-1)
    assert out.dtype == torch.int64 and (out[4] == -1).all()
    assert crop_and_resize_labels(labels[:0], boxes[:0], (7, 5)).shape == (0, 7, 5)
    # integer box inside the image == nearest-exact resize of the crop
    crop = labels[0, 3:15, 2:10][None, None].float()
    ref = F.interpolate(crop, size=(6, 16), mode="nearest-exact")[0, 0].to(torch.uint8)
    assert torch.equal(crop_and_resize_labels(labels[:1], boxes[:1], (6, 16))[0], ref)


def ref_paste(roi, box, hw):
    c = roi.shape[0]
    H, W = hw
    x0, y0, x1, y1 = (math.floor(v + 0.5) for v in box)
    bw, bh = max(x1 - x0, 1), max(y1 - y0, 1)
    resized = F.interpolate(roi[None], size=(bh, bw), mode="bilinear", align_corners=False)[0]
    canvas = torch.zeros(c, H, W, dtype=roi.dtype)
    for y in range(bh):
        for x in range(bw):
            if 0 <= y0 + y < H and 0 <= x0 + x < W:
                canvas[:, y0 + y, x0 + x] = resized[:, y, x]
    return canvas


def test_paste_roi_maps_reference():
    g = torch.Generator().manual_seed(8)
    maps = torch.randn(6, 4, 7, 5, generator=g)
    boxes = torch.tensor([[2.0, 3, 10, 15], [-4.5, -3, 8.2, 9.9], [5, 5, 5, 5], [0.3, 16.2, 20, 30],
                          [100, 100, 120, 110], [0, 0, 13, 17]])
    out = paste_roi_maps(maps, boxes, (17, 13))
    labels = paste_roi_maps(maps, boxes, (17, 13), argmax=True)
    assert out.shape == (6, 4, 17, 13) and labels.shape == (6, 17, 13) and labels.dtype == torch.uint8
    for n in range(6):
        ref = ref_paste(maps[n], boxes[n].tolist(), (17, 13))
        torch.testing.assert_close(out[n], ref, atol=1e-5, rtol=0)
        x0, y0 = (math.floor(v + 0.5) for v in boxes[n, :2].tolist())
        x1, y1 = max(math.floor(boxes[n, 2].item() + 0.5), x0 + 1), max(math.floor(boxes[n, 3].item() + 0.5), y0 + 1)
        inside = torch.zeros(17, 13, dtype=torch.bool)
        inside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        assert torch.equal(labels[n], torch.where(inside, ref.argmax(0), 0).to(torch.uint8)), n
    assert out[4].abs().max() == 0 and (labels[2] != 0).sum() <= 1
    assert paste_roi_maps(maps[4:5], boxes[4:5], (17, 13), argmax=True).abs().max() == 0
    assert paste_roi_maps(maps[:0], boxes[:0], (17, 13)).shape == (0, 4, 17, 13)
    assert paste_roi_maps(maps[:0], boxes[:0], (17, 13), argmax=True).shape == (0, 17, 13)
    with pytest.raises(ValueError):
        paste_roi_maps(torch.zeros(1, 300, 2, 2), boxes[:1], (17, 13), argmax=True)
    # gradients flow to the RoI maps
    m = maps[:2].clone().requires_grad_()
    paste_roi_maps(m, boxes[:2], (17, 13)).sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0
