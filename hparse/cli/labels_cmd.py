"""``hparse labels [NAME]``: print label sets, their classes, flip pairs and hierarchy."""

from __future__ import annotations

import typer

from ..labels import DatasetMeta, get_meta, list_metas
from .common import fail, palette_option


def labels(name: str = typer.Argument(None, help="label set; omit to list them all"),
           palette: str = palette_option("show colours of this palette: lip or voc")):
    """Print a label set's classes (id, name, colour, flip partner, level-2 parent)."""
    if name is None:
        from rich.console import Console  # here: every hparse call imports this module

        _list_all(Console())
        return
    try:
        meta = get_meta(name)
    except KeyError as e:
        fail(e)
    from rich.console import Console

    _show(meta, palette, Console())


def _list_all(console) -> None:
    from rich.table import Table

    from ..data.convert import list_converters

    t = Table("label set", "classes", "L/R pairs", "joints", "description")
    for n in list_metas():
        m = get_meta(n)
        t.add_row(n, str(m.num_classes), str(len(m.flip_pairs)), str(m.num_joints), m.description)
    console.print(t)
    c = Table("converter", "note")
    for conv in list_converters():
        c.add_row(conv.name, conv.note)
    console.print(c)


def _show(m: DatasetMeta, palette: str | None, console) -> None:
    from rich.table import Table

    pal = m.palette(palette)
    flip = m.flip_permutation()
    parents = {0: "-", 1: "upper", 2: "lower"}
    t = Table("id", "name", "colour", "flips to", "level 2", title=f"{m.name}: {m.description}")
    for i, cname in enumerate(m.classes):
        r, g, b = (int(v) for v in pal[i])
        t.add_row(str(i), cname, f"[on rgb({r},{g},{b})]      [/] ({r},{g},{b})",
                  m.classes[flip[i]] if flip[i] != i else "",
                  parents[m.hierarchy[i]] if m.hierarchy else "")
    console.print(t)
    if m.hierarchy_note:
        console.print(f"hierarchy: {m.hierarchy_note}")
    if m.joints:
        perm = m.joint_flip_permutation()
        console.print("joints: " + ", ".join(
            f"{j}:{n}" + (f"<->{m.joints[perm[j]]}" if perm[j] != j else "") for j, n in enumerate(m.joints)))


def register(app: typer.Typer) -> None:
    app.command("labels")(labels)
