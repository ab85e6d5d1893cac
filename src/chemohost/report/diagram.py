"""A model's structure as a self-contained SVG, drawn from the declaration (pure Python).

* species: labelled boxes (name, unit), one column per module (module name as heading), modules
  left to right in declaration order, wrapped into several rows when there are more than
  :data:`MAX_MODULES_PER_ROW`;
* flows: solid arrows source -> target; synthesis from / loss to outside the model is drawn
  from / to a small 'ø' marker;
* dosing routes: arrows from a drug label to the species receiving the dose, labelled with the
  route(s);
* signals: dashed arrows from each species a flow's rate reads (other than the flow's own source)
  to the flow's target (or to its source when the target is outside the model).

Hovering an element in a browser shows its description / rate expression (SVG ``<title>``).
Every arrow carries a class (``flow``, ``signal``, ``dose``) so tests and tools can count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..model.core import Model

MAX_MODULES_PER_ROW = 6

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#8c8c8c"]
FLOW_COLOUR = "#333333"
SIGNAL_COLOUR = "#7b3fa0"
DOSE_COLOUR = "#a3121b"
FONT = "Helvetica, Arial, 'DejaVu Sans', sans-serif"

MARGIN = 20
TITLE_H = 58
HEAD_H = 46          # module heading above the first box
BOX_H = 38
PITCH = 66           # vertical distance between boxes of one column
PILL_H = 24
PAD = 40             # band padding left/right of the boxes (room for ø markers and side curves)
BAND_GAP = 26
ROW_GAP = 46
SINK_R = 7
SINK_DX = 28


# -- graph -----------------------------------------------------------------------------------------
@dataclass
class DiagramEdges:
    flows: list[tuple[str, str | None, str | None, str]]  # (flow, source, target, rate)
    signals: list[tuple[str, str, list[str]]]  # (reader species, endpoint species, flows whose rate reads it)
    doses: list[tuple[str, str, list[str]]]  # (drug, target species, routes)


def diagram_edges(model: Model) -> DiagramEdges:
    """The arrows of the diagram, derived from the declaration (signals from the symbolic rates)."""
    from ..engine.codegen import symbolic

    sm = symbolic(model)
    order = {s: k for k, s in enumerate(model.species)}
    flows, signals = [], {}
    for f in model.flows.values():
        flows.append((f.name, f.source, f.target, f.rate))
        endpoint = f.target or f.source
        readers = sorted((str(s) for s in sm.flow_rates[f.name].free_symbols if str(s) in model.species),
                         key=order.__getitem__)
        for r in readers:
            if r in (f.source, endpoint):
                continue
            signals.setdefault((r, endpoint), []).append(f.name)
    doses = []
    for d in model.drugs.values():
        by_target: dict[str, list[str]] = {}
        for route, r in d.routes.items():
            by_target.setdefault(r.target, []).append(route)
        doses.extend((d.name, tgt, routes) for tgt, routes in by_target.items())
    return DiagramEdges(flows, [(a, b, fl) for (a, b), fl in signals.items()], doses)


def diagram_stats(model: Model) -> dict[str, int]:
    e = diagram_edges(model)
    return {"modules": len(model.modules), "species": len(model.species), "flows": len(e.flows),
            "signals": len(e.signals), "doses": len(e.doses)}


# -- layout ----------------------------------------------------------------------------------------
def _text_width(text: str, size: float, bold: bool = False) -> float:
    w = 0.0
    for ch in text:
        if ch in "ijlI.,:;'|!()[] ft":
            w += 0.30
        elif ch in "rs":
            w += 0.46
        elif ch in "mwMW":
            w += 0.86
        elif ch.isupper() or ch in "_":
            w += 0.64
        else:
            w += 0.56
    return w * size * (1.07 if bold else 1.0)


@dataclass
class _Node:
    name: str
    kind: str  # 'species' | 'drug'
    module: int
    lrow: int
    col: int
    idx: int
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Arrow:
    kind: str  # 'flow' | 'signal' | 'dose'
    src: str | None
    dst: str | None
    title: str
    label: str = ""
    sides: tuple[str, str] = ("", "")
    p0: tuple[float, float] = (0.0, 0.0)
    p3: tuple[float, float] = (0.0, 0.0)
    sink: tuple[float, float] | None = None  # ø marker centre
    ctrl: float = 0.0


@dataclass
class _Layout:
    width: float
    height: float
    nodes: dict[str, _Node] = field(default_factory=dict)
    bands: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # module, x, y, w, h
    legend_y: float = 0.0


_NORMAL = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}


def _layout(model: Model) -> _Layout:
    mods = list(model.modules)
    n_rows = max(1, math.ceil(len(mods) / MAX_MODULES_PER_ROW))
    per_row = max(1, math.ceil(len(mods) / n_rows))
    rows = [list(range(k, min(k + per_row, len(mods)))) for k in range(0, len(mods), per_row)] or [[]]
    lay = _Layout(0.0, 0.0)
    y0 = MARGIN + TITLE_H
    width = 0.0
    for lr, row in enumerate(rows):
        items = {m: [("drug", d.name) for d in mods[m].drugs] + [("species", s.name) for s in mods[m].species]
                 for m in row}
        n_max = max([1] + [len(v) for v in items.values()])
        band_h = HEAD_H + (n_max - 1) * PITCH + BOX_H + 16
        x = MARGIN
        for m in row:
            mod = mods[m]
            box_w = 96.0
            for kind, name in items[m]:
                if kind == "species":
                    sp = model.species[name]
                    box_w = max(box_w, _text_width(name, 12.5, True) + 20, _text_width(sp.unit, 10) + 20)
                else:
                    box_w = max(box_w, _text_width(name, 11.5, True) + 24)
            pad = PAD
            if items[m]:
                col_w = max(box_w, _text_width(mod.name, 13.5, True) + 8)
            else:  # a parameters-only module: a narrow band
                col_w, pad = max(_text_width(mod.name, 13.5, True), _text_width("(parameters only)", 10.5)), 12
            lay.bands.append((m, x, y0, col_w + 2 * pad, band_h))
            for i, (kind, name) in enumerate(items[m]):
                top = y0 + HEAD_H + i * PITCH
                if kind == "species":
                    node = _Node(name, kind, m, lr, m, i, x + PAD + (col_w - box_w) / 2, top, box_w, BOX_H)
                else:
                    w = _text_width(name, 11.5, True) + 24
                    node = _Node(name, kind, m, lr, m, i, x + PAD + (col_w - w) / 2, top + (BOX_H - PILL_H) / 2,
                                 w, PILL_H)
                lay.nodes[name] = node
            x += col_w + 2 * pad + BAND_GAP
        width = max(width, x - BAND_GAP + MARGIN)
        y0 += band_h + ROW_GAP
    lay.width = max(width, 640.0)
    lay.legend_y = y0 - ROW_GAP + 24
    return lay


def _sides(a: _Node, b: _Node) -> tuple[str, str]:
    """Box sides an arrow a -> b leaves and enters by.  Top and bottom are kept for arrows between
    neighbours in one column (so those stay straight); everything else uses left / right."""
    if a.col != b.col and abs(b.cx - a.cx) < 1.0:  # columns stacked above each other (wrapped rows)
        return ("right", "right")
    if a.col != b.col:
        return ("right", "left") if b.cx > a.cx else ("left", "right")
    if abs(b.idx - a.idx) == 1:
        return ("bottom", "top") if b.idx > a.idx else ("top", "bottom")
    return ("right", "right") if b.idx >= a.idx else ("left", "left")


def _place_arrows(lay: _Layout, arrows: list[_Arrow]) -> None:
    """Choose box sides, spread the attachment points along each side, place ø markers."""
    ports: dict[tuple[str, str], list[tuple[float, int, int]]] = {}  # (node, side) -> (key, arrow, end)
    for k, a in enumerate(arrows):
        if a.src is None or a.dst is None:
            a.sides = ("right", "right") if a.dst is None else ("left", "left")
            node = a.src or a.dst
            key = 1e9 if a.dst is None else -1e9
            ports.setdefault((node, a.sides[0]), []).append((key, k, 0 if a.dst is None else 1))
            continue
        na, nb = lay.nodes[a.src], lay.nodes[a.dst]
        a.sides = _sides(na, nb)
        for end, (me, other) in enumerate(((na, nb), (nb, na))):
            side = a.sides[end]
            key = other.cy if side in ("left", "right") else other.cx
            ports.setdefault((me.name, side), []).append((key, k, end))
        dx, dy = abs(nb.cx - na.cx), abs(nb.cy - na.cy)
        if a.sides[0] == a.sides[1]:
            steps = abs(nb.idx - na.idx) if na.col == nb.col else 6
            a.ctrl = min(88.0, 28.0 + 11.0 * steps)
        elif a.sides[0] in ("left", "right"):
            a.ctrl = max(24.0, 0.45 * dx)
        else:
            a.ctrl = max(10.0, 0.45 * dy)
    sinks: dict[tuple[str, str], list[int]] = {}
    for (name, side), lst in ports.items():
        node = lay.nodes[name]
        lst.sort()
        n = len(lst)
        for j, (_, k, end) in enumerate(lst):
            frac = (j + 1) / (n + 1) if n <= 3 else (j + 0.5) / n  # crowded sides: use the full length
            if side == "left":
                p = (node.x, node.y + frac * node.h)
            elif side == "right":
                p = (node.x + node.w, node.y + frac * node.h)
            elif side == "top":
                p = (node.x + frac * node.w, node.y)
            else:
                p = (node.x + frac * node.w, node.y + node.h)
            if end == 0:
                arrows[k].p0 = p
            else:
                arrows[k].p3 = p
            if arrows[k].src is None or arrows[k].dst is None:
                sinks.setdefault((name, side), []).append(k)
    for (name, side), ks in sinks.items():
        # inflows from ø: above-left of the box; outflows to ø: below-right (corners stay free of
        # the arrows between columns, which attach near the middle of the sides)
        node = lay.nodes[name]
        for j, k in enumerate(ks):
            if side == "left":
                arrows[k].sink = (node.x - SINK_DX, node.y + 4 - (len(ks) - 1 - j) * (2 * SINK_R + 3))
            else:
                arrows[k].sink = (node.x + node.w + SINK_DX, node.y + node.h - 4 + j * (2 * SINK_R + 3))


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _path(a: _Arrow) -> tuple[str, tuple[float, float]]:
    """SVG path data and the path's midpoint (for labels)."""
    if a.sink is not None:
        (sx, sy), port = a.sink, (a.p0 if a.dst is None else a.p3)
        dx, dy = port[0] - sx, port[1] - sy
        d = math.hypot(dx, dy) or 1.0
        edge = (sx + dx / d * SINK_R, sy + dy / d * SINK_R)
        p0, p3 = (port, edge) if a.dst is None else (edge, port)
        mid = ((p0[0] + p3[0]) / 2, (p0[1] + p3[1]) / 2)
        return f"M{_fmt(p0[0])},{_fmt(p0[1])} L{_fmt(p3[0])},{_fmt(p3[1])}", mid
    n0, n3 = _NORMAL[a.sides[0]], _NORMAL[a.sides[1]]
    p0, p3 = a.p0, a.p3
    p1 = (p0[0] + n0[0] * a.ctrl, p0[1] + n0[1] * a.ctrl)
    p2 = (p3[0] + n3[0] * a.ctrl, p3[1] + n3[1] * a.ctrl)
    mid = ((p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8, (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8)
    pts = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in (p1, p2, p3))
    return f"M{_fmt(p0[0])},{_fmt(p0[1])} C{pts}", mid


def _tint(colour: str, amount: float) -> str:
    """Mix ``colour`` with white (amount 0 -> colour, 1 -> white) or black (amount < 0)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    if amount >= 0:
        r, g, b = (round(c + (255 - c) * amount) for c in (r, g, b))
    else:
        r, g, b = (round(c * (1 + amount)) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def _text(x, y, s, size, *, anchor="middle", weight="normal", fill="#222", style="", cls="") -> str:
    extra = f' font-style="{style}"' if style else ""
    extra += f' class="{cls}"' if cls else ""
    return (f'<text x="{_fmt(x)}" y="{_fmt(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}"{extra}>{escape(s)}</text>')


# -- drawing ---------------------------------------------------------------------------------------
def diagram_svg(model: Model) -> str:
    """The model's structure as a self-contained SVG document (a string)."""
    edges = diagram_edges(model)
    lay = _layout(model)
    arrows: list[_Arrow] = []
    for name, src, dst, rate in edges.flows:
        arrows.append(_Arrow("flow", src, dst, f"flow {name}: {src or 'ø'} → {dst or 'ø'}\nrate = {rate}"))
    for reader, endpoint, flows in edges.signals:
        arrows.append(_Arrow("signal", reader, endpoint,
                             f"signal {reader} → {endpoint}: read by the rate of {', '.join(flows)}"))
    for drug, target, routes in edges.doses:
        arrows.append(_Arrow("dose", drug, target, f"dose of {drug} by {', '.join(routes)} into {target}",
                             label=", ".join(routes)))
    _place_arrows(lay, arrows)
    subtitle = (f"{model.description} — {len(model.modules)} modules, {len(model.species)} species, "
                f"{len(edges.flows)} flows, {len(edges.signals)} signals, {len(model.drugs)} drugs")
    lay.width = max(lay.width, _text_width(subtitle, 11.5) * 1.2 + 2 * MARGIN)

    legend_items = [
        ("flow", "flow: amount moves from source to target"),
        ("sink", "ø: outside the model (synthesis / elimination)"),
        ("signal", "signal: a flow's rate reads this species"),
        ("dose", "dose: drug → species receiving it (route)"),
    ]
    # legend geometry (wrapped over the diagram width)
    lx, ly, legend_rows = MARGIN, lay.legend_y + 22, 1
    positions = []
    for kind, label in legend_items:
        w = 58 + _text_width(label, 11) * 1.1 + 36
        if lx + w > lay.width - MARGIN and lx > MARGIN:
            lx, ly, legend_rows = MARGIN, ly + 22, legend_rows + 1
        positions.append((kind, label, lx, ly))
        lx += w
    height = ly + 22 + MARGIN

    W, H = lay.width, height
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(W)}" height="{_fmt(H)}" '
           f'viewBox="0 0 {_fmt(W)} {_fmt(H)}" font-family="{FONT}">',
           f"<title>{escape(f'model {model.name}: {model.description}')}</title>",
           "<defs>"]
    for kind, colour in (("flow", FLOW_COLOUR), ("signal", SIGNAL_COLOUR), ("dose", DOSE_COLOUR)):
        out.append(f'<marker id="head-{kind}" viewBox="0 0 10 10" refX="9.5" refY="5" markerUnits="userSpaceOnUse" '
                   f'markerWidth="{7 if kind == "signal" else 9}" markerHeight="{7 if kind == "signal" else 9}" '
                   f'orient="auto">'
                   f'<path d="M0,0.8 L10,5 L0,9.2 z" fill="{colour}"/></marker>')
    out.append("</defs>")
    out.append(f'<rect x="0" y="0" width="{_fmt(W)}" height="{_fmt(H)}" fill="#ffffff"/>')
    out.append(_text(MARGIN, MARGIN + 18, f"model {model.name}", 17, anchor="start", weight="bold"))
    out.append(_text(MARGIN, MARGIN + 38, subtitle, 11.5, anchor="start", fill="#555"))

    # module bands
    out.append('<g id="modules">')
    for m, x, y, w, h in lay.bands:
        mod = model.modules[m]
        colour = PALETTE[m % len(PALETTE)]
        out.append(f'<g class="module" id={quoteattr("module-" + mod.name)}><title>{escape(mod.description)}</title>')
        out.append(f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(w)}" height="{_fmt(h)}" rx="10" '
                   f'fill="{_tint(colour, 0.9)}" stroke="{_tint(colour, 0.55)}" stroke-width="1"/>')
        out.append(_text(x + w / 2, y + 24, mod.name, 13.5, weight="bold", fill=_tint(colour, -0.35),
                         cls="module-name"))
        if not mod.species and not mod.drugs:
            out.append(_text(x + w / 2, y + HEAD_H + BOX_H / 2 + 4, "(parameters only)", 10.5, fill="#777",
                             style="italic"))
        out.append("</g>")
    out.append("</g>")

    # arrows under the boxes: signals, then flows, then doses
    labels = []
    for kind, width, dash in (("signal", 1.1, ' stroke-dasharray="5,3" stroke-opacity="0.85"'), ("flow", 1.5, ""), ("dose", 2.0, "")):
        colour = {"flow": FLOW_COLOUR, "signal": SIGNAL_COLOUR, "dose": DOSE_COLOUR}[kind]
        out.append(f'<g id="{kind}s">')
        for a in arrows:
            if a.kind != kind:
                continue
            d, mid = _path(a)
            ends = f'data-from={quoteattr(a.src or "ø")} data-to={quoteattr(a.dst or "ø")}'
            out.append(f'<path class="{kind}" {ends} d="{d}" fill="none" stroke="{colour}" '
                       f'stroke-width="{width}"{dash} marker-end="url(#head-{kind})">'
                       f'<title>{escape(a.title)}</title></path>')
            if a.label:
                labels.append((mid, a.label))
        out.append("</g>")
    out.append('<g id="sinks">')
    for a in arrows:
        if a.sink is not None:
            sx, sy = a.sink
            out.append(f'<g class="sink"><circle cx="{_fmt(sx)}" cy="{_fmt(sy)}" r="{SINK_R}" fill="#ffffff" '
                       f'stroke="#777" stroke-width="1"/>'
                       + _text(sx, sy + 3.6, "ø", 10.5, fill="#555") + "</g>")
    out.append("</g>")

    # boxes and drug labels on top
    out.append('<g id="species">')
    for node in lay.nodes.values():
        colour = PALETTE[node.module % len(PALETTE)]
        if node.kind == "species":
            sp = model.species[node.name]
            tip = f"{sp.name} [{sp.unit}]" + (f": {sp.description}" if sp.description else "")
            out.append(f'<g class="species" id={quoteattr("species-" + node.name)}><title>{escape(tip)}</title>'
                       f'<rect x="{_fmt(node.x)}" y="{_fmt(node.y)}" width="{_fmt(node.w)}" height="{_fmt(node.h)}" '
                       f'rx="5" fill="{_tint(colour, 0.72)}" stroke="{_tint(colour, -0.15)}" stroke-width="1.2"/>'
                       + _text(node.cx, node.y + 16, node.name, 12.5, weight="bold", fill="#1a1a1a",
                               cls="species-name")
                       + _text(node.cx, node.y + 30, sp.unit, 10, fill="#555") + "</g>")
    out.append("</g>")
    out.append('<g id="drugs">')
    for node in lay.nodes.values():
        if node.kind == "drug":
            drug = model.drugs[node.name]
            out.append(f'<g class="drug"><title>{escape(f"drug {drug.name} (MW {drug.molecular_weight} g/mol)")}'
                       f'</title><rect x="{_fmt(node.x)}" y="{_fmt(node.y)}" width="{_fmt(node.w)}" '
                       f'height="{_fmt(node.h)}" rx="{_fmt(node.h / 2)}" fill="{DOSE_COLOUR}"/>'
                       + _text(node.cx, node.y + 16, node.name, 11.5, weight="bold", fill="#ffffff",
                               cls="drug-name") + "</g>")
    out.append("</g>")
    out.append('<g id="route-labels">')
    for (mx, my), label in labels:
        w = _text_width(label, 10) + 8
        out.append(f'<rect x="{_fmt(mx - w / 2)}" y="{_fmt(my - 8)}" width="{_fmt(w)}" height="14" rx="3" '
                   f'fill="#ffffff" fill-opacity="0.9" stroke="{DOSE_COLOUR}" stroke-width="0.6"/>'
                   + _text(mx, my + 2.8, label, 10, fill=DOSE_COLOUR, style="italic"))
    out.append("</g>")

    # legend
    out.append('<g id="legend">')
    out.append(f'<line x1="{MARGIN}" y1="{_fmt(lay.legend_y)}" x2="{_fmt(W - MARGIN)}" y2="{_fmt(lay.legend_y)}" '
               f'stroke="#cccccc" stroke-width="1"/>')
    for kind, label, x, y in positions:
        if kind == "sink":
            out.append(f'<line x1="{_fmt(x)}" y1="{_fmt(y)}" x2="{_fmt(x + 30)}" y2="{_fmt(y)}" stroke="{FLOW_COLOUR}" '
                       f'stroke-width="1.5" marker-end="url(#head-flow)"/>'
                       f'<circle cx="{_fmt(x + 40)}" cy="{_fmt(y)}" r="{SINK_R}" fill="#ffffff" stroke="#777"/>'
                       + _text(x + 40, y + 3.6, "ø", 10.5, fill="#555"))
        else:
            colour = {"flow": FLOW_COLOUR, "signal": SIGNAL_COLOUR, "dose": DOSE_COLOUR}[kind]
            dash = ' stroke-dasharray="5,3"' if kind == "signal" else ""
            width = {"flow": 1.5, "signal": 1.3, "dose": 2.0}[kind]
            out.append(f'<line x1="{_fmt(x)}" y1="{_fmt(y)}" x2="{_fmt(x + 46)}" y2="{_fmt(y)}" stroke="{colour}" '
                       f'stroke-width="{width}"{dash} marker-end="url(#head-{kind})"/>')
        out.append(_text(x + 58, y + 4, label, 11, anchor="start", fill="#333"))
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_diagram(model: Model, path: str | Path) -> Path:
    """Write :func:`diagram_svg` to ``path`` atomically (checked path, temporary file, then rename)."""
    from ..outputs import check_out_path, write_file_atomically

    check_out_path(path, kind="file")  # before drawing
    return write_file_atomically(path, diagram_svg(model))
