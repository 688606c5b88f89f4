"""Readable pictures: the default palettes keep touching classes apart (CIEDE2000), LIP / VOC stay selectable,
label PNGs keep class ids, and overlays carry a legend of the classes present."""

from __future__ import annotations

import numpy as np
import pytest

from hparse.labels import DISTINCT_PALETTES, LIP_PALETTE, PALETTES, TOUCHING, get_meta, list_metas
from hparse.viz import legend_panel, overlay, present_classes
from hparse.viz.colour import delta_e_2000, rgb_delta_e, rgb_to_lab
from hparse.viz.legend import legend_width
from hparse.viz.palette_design import design_palette, palette_report

DESIGNED = ("lip", "cihp", "vip", "atr", "pascal_person_part", "ppss", "ccp15")
MIN_TOUCHING, MIN_ANY_PAIR = 30.0, 18.0   # CIEDE2000; ~1 is just noticeable, > 20 reads as another colour


@pytest.mark.parametrize(("lab1", "lab2", "expected"), [    # Sharma, Wu & Dalal (2005), Table 1
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.5, 0), (73, 25, -18), 27.1492),
    ((50, 2.5, 0), (61, -5, 29), 22.8977),
    ((50, 2.5, 0), (56, -27, -3), 31.9030),
    ((50, 2.5, 0), (58, 24, 15), 19.4535),
    ((50, 2.5, 0), (50, 3.1736, 0.5854), 1.0),
])
def test_ciede2000_matches_the_published_pairs(lab1, lab2, expected):
    assert float(delta_e_2000(lab1, lab2)) == pytest.approx(expected, abs=1e-4)
    assert float(delta_e_2000(lab2, lab1)) == pytest.approx(expected, abs=1e-4)


def test_srgb_to_lab_reference_points():
    np.testing.assert_allclose(rgb_to_lab([255, 255, 255]), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb_to_lab([0, 0, 0]), [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.01)


@pytest.mark.parametrize("name", DESIGNED)
def test_default_palette_keeps_touching_classes_apart(name):
    meta = get_meta(name)
    rep = palette_report(meta, meta.palette())
    assert rep.touching >= MIN_TOUCHING, (name, rep)
    assert rep.any_pair >= MIN_ANY_PAIR, (name, rep)
    assert len(DISTINCT_PALETTES[name]) == meta.num_classes
    assert tuple(meta.palette()[0]) == (0, 0, 0)                    # background stays black


@pytest.mark.parametrize("name", DESIGNED)
def test_old_palettes_failed_what_the_new_ones_pass(name):
    meta = get_meta(name)
    for old in ("lip", "voc"):
        assert palette_report(meta, meta.palette(old)).touching < MIN_TOUCHING


def test_the_reported_confusions_are_gone():
    ccp = get_meta("ccp15")
    pal = ccp.palette()
    for a, b in [("hair", "shoes"), ("dress", "accessories"), ("upper-clothes", "scarf")]:
        ia, ib = ccp.classes.index(a), ccp.classes.index(b)
        assert rgb_delta_e(pal[ia], pal[ib]) >= MIN_ANY_PAIR, (a, b)
        assert rgb_delta_e(ccp.palette("voc")[ia], ccp.palette("voc")[ib]) < 10    # as before


def test_lip_and_voc_stay_selectable():
    lip = get_meta("lip")
    np.testing.assert_array_equal(lip.palette("lip")[:20], np.array(LIP_PALETTE, np.uint8))
    np.testing.assert_array_equal(lip.palette("voc"), np.array(PALETTES["voc"], np.uint8))
    assert set(PALETTES) == {"lip", "voc"}                           # what --palette accepts
    for name in list_metas():                                        # every set still gets a full table
        assert get_meta(name).palette().shape == (256, 3)


def test_touching_tables_name_real_classes():
    for name, table in TOUCHING.items():
        classes = set(get_meta(name).classes)
        for a, near in table.items():
            assert a in classes and set(near) <= classes, (name, a, set(near) - classes)
        assert get_meta(name).touching_pairs()


def test_design_palette_meets_its_own_report():
    meta = get_meta("pascal_person_part")
    pal = design_palette(meta)
    assert palette_report(meta, pal).touching >= 40
    np.testing.assert_array_equal(pal, np.array(DISTINCT_PALETTES["pascal_person_part"], np.uint8))


def test_label_png_keeps_class_ids(tmp_path):
    from PIL import Image

    from hparse.io.image import read_label, write_label_png

    label = np.arange(15, dtype=np.uint8).repeat(4).reshape(6, 10)
    write_label_png(tmp_path / "l.png", label, get_meta("ccp15").palette())
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), label)
    assert Image.open(tmp_path / "l.png").mode == "P"


def _scene():
    label = np.zeros((120, 80), np.uint8)
    label[10:40, 20:60] = 2     # hair
    label[40:100, 15:65] = 6    # dress
    image = np.full((120, 80, 3), 128, np.uint8)
    return image, label


def test_overlay_without_classes_is_unchanged_and_with_them_adds_a_legend():
    meta = get_meta("ccp15")
    image, label = _scene()
    plain = overlay(image, label, meta.palette())
    assert plain.shape == image.shape
    with_legend = overlay(image, label, meta.palette(), classes=meta.classes)
    assert with_legend.shape[0] == 120 and with_legend.shape[1] == 80 + legend_width(120, meta.classes)
    np.testing.assert_array_equal(with_legend[:, :80], plain)


def test_legend_shows_the_present_classes_colours_only():
    meta = get_meta("ccp15")
    pal = meta.palette()
    image, label = _scene()
    panel = legend_panel(label, pal, meta.classes, 120)
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    assert tuple(pal[2]) in colours and tuple(pal[6]) in colours
    assert not {tuple(pal[c]) for c in (1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14)} & colours
    assert (panel < 100).all(-1).sum() > 20                         # dark text was drawn
    assert present_classes(label) == [2, 6]


def test_legend_width_depends_on_height_and_label_set_only():
    meta = get_meta("lip")
    a, b = np.zeros((200, 50), np.uint8), np.arange(20, dtype=np.uint8).repeat(500).reshape(200, 50)
    assert legend_panel(a, meta.palette(), meta.classes, 200).shape == legend_panel(
        b, meta.palette(), meta.classes, 200).shape
    assert legend_width(40, meta.classes) > legend_width(600, meta.classes)   # short pictures: more columns
