"""The model diagram (``chemohost diagram``): a self-contained SVG drawn from the declaration."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from chemohost.cli import main
from chemohost.model.core import Flow, Module, ParameterSpec, Species, compose
from chemohost.model.registry import MODELS, get_model
from chemohost.report.diagram import diagram_edges, diagram_svg, write_diagram

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def arrow_pairs(root: ET.Element, cls: str) -> set[tuple[str, str]]:
    """(from, to) of the arrows of a class ('ø' for outside the model)."""
    return {(e.get("data-from"), e.get("data-to")) for e in by_class(root, cls)}


@pytest.fixture(scope="module")
def core():
    model = get_model("chemo_core")
    return model, parse(diagram_svg(model))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_valid_svg_with_all_names(name):
    try:
        model = get_model(name)
    except Exception as exc:  # building the model is tested elsewhere; here only its drawing
        pytest.skip(f"model {name} does not build: {type(exc).__name__}: {exc}")
    root = parse(diagram_svg(model))
    assert root.tag == f"{NS}svg"
    words = texts(root)
    for s in model.species:
        assert s in words, s
    for m in model.modules:
        assert m.name in words, m.name
    for d in model.drugs:
        assert d in words, d
    # one solid arrow per flow, none dashed
    flows = by_class(root, "flow")
    assert len(flows) == len(model.flows)
    assert all(f.get("stroke-dasharray") is None for f in flows)
    # no external references: self-contained
    svg = diagram_svg(model)
    assert "xlink:href" not in svg and "<image" not in svg and "@import" not in svg


def test_flow_arrows_and_outside_markers(core):
    model, root = core
    expected = {(f.source or "ø", f.target or "ø") for f in model.flows.values()}
    assert arrow_pairs(root, "flow") == expected
    n_outside = sum((f.source is None) + (f.target is None) for f in model.flows.values())
    assert len(by_class(root, "sink")) == n_outside
    assert sum(t == "ø" for t in texts(root)) >= n_outside


def test_signal_arrows(core):
    model, root = core
    signals = by_class(root, "signal")
    assert signals and all(s.get("stroke-dasharray") for s in signals)
    pairs = arrow_pairs(root, "signal")
    # drug-effect signals: dFdCTP and cisplatin act on neutrophil precursors and the tumour
    for reader in ("dfdctp", "cis_c"):
        assert (reader, "neut_prol") in pairs  # neut_drug_kill: neut_prol -> ø, drawn to its source
        assert (reader, "tumour_x2") in pairs  # tumour_damage: tumour_x1 -> tumour_x2
    assert ("neut_circ", "neut_prol") in pairs  # feedback on proliferation
    assert ("gem_c", "dfdctp") in pairs  # formation from outside, rate reads plasma gemcitabine
    # never a flow's own source, never a self-loop
    assert ("tumour_x1", "tumour_x2") not in pairs
    assert all(a != b for a, b in pairs)
    assert len(signals) == len(diagram_edges(model).signals)


def test_dose_arrows(core):
    model, root = core
    doses = by_class(root, "dose")
    targets = {(d, r.target) for d, drug in model.drugs.items() for r in drug.routes.values()}
    assert len(doses) == len(targets)
    words = texts(root)
    assert "iv" in words and any("ip" in w for w in words)


def test_boxes_do_not_overlap(core):
    model, root = core
    boxes = []
    for g in by_class(root, "species") + by_class(root, "drug"):
        r = g.find(f"{NS}rect")
        boxes.append(tuple(float(r.get(k)) for k in ("x", "y", "width", "height")))
    assert len(boxes) == len(model.species) + len(model.drugs)
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1:]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


def test_legend(core):
    _, root = core
    words = " ".join(texts(root))
    for word in ("flow", "signal", "dose", "outside the model"):
        assert word in words


def test_many_modules_wrap_and_stay_apart():
    """A ~50-species model with 10 modules: two rows of bands, no overlapping boxes."""
    mods = []
    for m in range(10):
        sp = tuple(Species(f"m{m}_s{k}", "1/L", 1.0) for k in range(5))
        other = f"m{(m + 3) % 10}_s2"
        flows = tuple(Flow(f"m{m}_f{k}", sp[k].name, sp[k + 1].name, f"k{m}*{sp[k].name}*{other}")
                      for k in range(4))
        flows += (Flow(f"m{m}_in", None, sp[0].name, f"k{m}"),
                  Flow(f"m{m}_out", sp[4].name, None, f"k{m}*{sp[4].name}"))
        mods.append(Module(f"module_{m}", "test", sp, (ParameterSpec(f"k{m}", "1/day"),), flows))
    model = compose("wide", "ten modules", mods)
    root = parse(diagram_svg(model))
    bands = [g.find(f"{NS}rect") for g in by_class(root, "module")]
    assert len(bands) == 10
    assert len({float(b.get("y")) for b in bands}) == 2  # wrapped to a second row
    rects = [tuple(float(b.get(k)) for k in ("x", "y", "width", "height")) for b in bands]
    for i, (x1, y1, w1, h1) in enumerate(rects):
        for x2, y2, w2, h2 in rects[i + 1:]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
    assert len(by_class(root, "flow")) == 60
    assert len(by_class(root, "signal")) == 40


def test_write_diagram(tmp_path):
    path = write_diagram(get_model("gemcitabine_pk"), tmp_path / "sub" / "g.svg")
    assert path.exists() and parse(path.read_text(encoding="utf-8")) is not None
    assert [p.name for p in path.parent.iterdir()] == ["g.svg"]


def test_cli_writes_file(tmp_path, capsys):
    out = tmp_path / "core.svg"
    assert main(["diagram", "--model", "chemo_core", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    root = ET.parse(out).getroot()
    assert "dfdctp" in texts(root)


def test_cli_unknown_model(tmp_path, capsys):
    out = tmp_path / "x.svg"
    rc = main(["diagram", "--model", "chemo_cor", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "chemo_core" in err and "Traceback" not in err
    assert not out.exists()
