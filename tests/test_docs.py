"""Generated docs stay in sync with the declaration."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_parameter_docs_are_current():
    spec = importlib.util.spec_from_file_location("render", ROOT / "scripts" / "render_parameter_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "parameters.md").read_text() == mod.render(), \
        "docs/parameters.md is stale: run python scripts/render_parameter_docs.py"
