"""Reading YAML input files safely: one loader for every file chemohost reads.

Before any value reaches a schema, the text is checked for what PyYAML's ``safe_load`` lets
through:

* **duplicate keys** (YAML says keys are unique; PyYAML keeps the last one silently, so a second
  ``gemcitabine:`` arm or a second ``seed:`` would replace the first): every duplicate is reported
  with both line numbers;
* **alias bombs** ("billion laughs": a few anchors expanding to billions of nodes): the expanded
  size of the document is computed on the composed node graph (linear in its distinct nodes) and
  must stay under :data:`MAX_NODES`;
* **absurd nesting** (thousands of brackets, which make the recursive composer overflow the
  stack): the depth is measured on PyYAML's event stream (iterative) before composing and must stay
  under :data:`MAX_DEPTH`;
* **size**: files over :data:`MAX_BYTES` are refused before parsing.

Every problem is a :class:`~chemohost.errors.ScenarioError` naming the file (and line), never a
Python traceback.  This module imports only :mod:`chemohost.errors` (a bottom layer).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ScenarioError

MAX_BYTES = 2 * 1024 * 1024  #: largest input file (a scenario is a few KB; event tables are CSV)
MAX_DEPTH = 64  #: deepest nesting of mappings/sequences
MAX_NODES = 200_000  #: most nodes after expanding aliases


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys instead of keeping the last silently."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except (TypeError, yaml.constructor.ConstructorError):
                continue  # unhashable keys are reported by the base class below
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append(f"duplicate key '{_short(key)}' at line {line} (first at line {seen[key]}); "
                                       "YAML keys must be unique: rename or merge the two entries")
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _short(x, n: int = 60) -> str:
    s = str(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _depth_ok(text: str, where: str) -> None:
    depth = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ScenarioError(f"nesting deeper than {MAX_DEPTH} levels at line {ev.start_mark.line + 1}; "
                                        "input files are shallow mappings and lists", file=where)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {_short(exc, 400)}", file=where) from None


def _expanded_size(node, memo: dict, stack: set) -> int:
    """Nodes of the document with every alias expanded (memoised on node identity; iterative-safe
    because depth is already bounded)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in stack:  # a recursive alias: cannot be expanded
        return MAX_NODES + 1
    stack.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, stack) + _expanded_size(v, memo, stack) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, stack) for v in node.value)
    else:
        size = 1
    stack.discard(key)
    memo[key] = size
    return size


def loads(text: str, where: str = "<input>"):
    """Parse YAML ``text`` (the checks above); returns the plain Python data."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ScenarioError(f"file larger than {MAX_BYTES // 1024 // 1024} MiB; input files are small YAML", file=where)
    _depth_ok(text, where)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_NODES:
            raise ScenarioError(f"the document expands to more than {MAX_NODES:,} nodes through aliases (&anchor / "
                                "*alias); write the values out or use fewer aliases", file=where)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {_short(exc, 400)}", file=where) from None
    except RecursionError:
        raise ScenarioError(f"nesting too deep to read (limit {MAX_DEPTH} levels)", file=where) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ScenarioError("\n  ".join([f"{len(loader.duplicates)} duplicate key(s):", *loader.duplicates]),
                            file=where)
    return data


def load_file(path: str | Path, what: str):
    """Read a UTF-8 YAML file (see :func:`loads`); a missing, unreadable or oversized file is a
    ScenarioError naming it."""
    if not str(path).strip():
        raise ScenarioError(f"no {what} file given (the input path is empty); give a {what} YAML file")
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{what} file not found: {path}")
    if not path.is_file():
        raise ScenarioError(f"{what} path is not a file: {path}; give a {what} YAML file", file=str(path))
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ScenarioError(f"file of {size:,} bytes is larger than {MAX_BYTES // 1024 // 1024} MiB; a {what} is "
                                "a small YAML file", file=str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the {what} file ({_short(exc, 200)}); it must be UTF-8 YAML text",
                            file=str(path)) from None
    return loads(text, str(path))
