"""Read YAML files with line numbers, `${VAR}` substitution and readable validation errors.

Every YAML file the product reads goes through `parse_yaml`, so each problem is reported the same way:
`file:line: field: what was expected` (site.yaml and model.yaml via `load_model`), or
`file:line:column: ...` (rule files and rule tests, which validate with `parse_yaml`'s positions).
It also refuses what would exhaust memory or the stack instead of being read: aliases that expand
beyond a budget (a 700-byte "billion laughs" file is gigabytes once expanded), recursive aliases and
absurd nesting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from monitor.errors import UserError

M = TypeVar("M", bound=pydantic.BaseModel)

# Nodes that aliases may add to a file once expanded. Real files reuse a little (a camera's defaults
# merged into each of a few hundred cameras); an alias bomb needs millions. At this budget an expanded
# file costs a few tens of MB, however it was built.
ALIAS_BUDGET = 20_000
MAX_DEPTH = 64  # nested collections: site.yaml and rule files need fewer than 10


class StrictModel(pydantic.BaseModel):
    """The base of every model read from a user's YAML: unknown keys are errors, values are frozen."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; return its data and the line (1-based) of each field path."""
    data, marks = parse_yaml(read_text(path), path)
    return data, {at: line for at, (line, _) in marks.items()}


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None


def parse_yaml(text: str, path: Path) -> tuple[Any, dict[tuple, tuple[int, int]]]:
    """Parse YAML text read from `path`; return its data and the (line, column), 1-based, of each
    field path (a key's own position for a mapping entry)."""
    data, node = compose_yaml(text, path)
    marks: dict[tuple, tuple[int, int]] = {}
    if node is not None:
        _index_marks(node, (), marks)
    return data, marks


def compose_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text read from `path` within the alias budget; return its data and its node tree
    (for callers that need where each value is written, e.g. to quote a rule as written)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # inside the try: its reader already refuses control characters
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with a budget for what aliases expand to and a limit on nesting. Aliases
    share one node, so the file's expanded size is counted as it is composed, without expanding it."""

    def __init__(self, text: str):
        super().__init__(text)
        self._sizes: dict[int, int] = {}  # id(node) -> its size once expanded; only nodes fully composed
        self._aliased = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # (an undefined alias is PyYAML's error)
                if id(target) not in self._sizes:
                    raise self._refuse(f"alias *{event.anchor} refers to the node that holds it", event)
                self._aliased += self._sizes[id(target)]
                if self._aliased > ALIAS_BUDGET:
                    raise self._refuse(f"aliases expand to more than {ALIAS_BUDGET} nodes (an alias bomb?)", event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(f"nested more than {MAX_DEPTH} levels deep", self.peek_event())
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = _own_size(node) + sum(self._sizes[id(child)] for child in _children(node))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML lets other errors out of a value it cannot make (ValueError for the date 2024-13-45 or an
        integer of 5000 digits, AttributeError for `!!timestamp soon`, KeyError for `!!bool maybe`): locate them."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            raise yaml.constructor.ConstructorError(None, None, f"invalid value: {exc}", node.start_mark) from None

    @staticmethod
    def _refuse(problem: str, event: yaml.Event) -> yaml.YAMLError:
        return yaml.composer.ComposerError(None, None, problem, event.start_mark)


def _own_size(node: yaml.Node) -> int:
    """1, and for a scalar one more per 100 characters: an alias of a long string costs what it copies."""
    return 1 + (len(node.value) // 100 if isinstance(node, yaml.ScalarNode) else 0)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _index_marks(node: yaml.Node, at: tuple, marks: dict[tuple, tuple[int, int]]) -> None:
    marks[at] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_at = (*at, key.value)
            _index_marks(value, key_at, marks)
            marks[key_at] = _mark(key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_marks(item, (*at, i), marks)


def substitute_env(data: Any, path: Path, at: tuple = ()) -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string from the environment."""
    if isinstance(data, dict):
        return {k: substitute_env(v, path, (*at, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, path, (*at, i)) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise UserError(f"{path}: {field_name(at)}: environment variable {name} is not set")

    return _VAR.sub(value, data)


def field_name(at: tuple) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def located(path: Path, positions: dict[tuple, Any], at: tuple) -> str:
    """`file:line` (or `file:line:column` when `positions` holds (line, column)) of the nearest known
    field path at or above `at`."""
    pos = next((positions[at[:n]] for n in range(len(at), -1, -1) if at[:n] in positions), None)
    if pos is None:
        return str(path)
    return f"{path}:{pos}" if isinstance(pos, int) else f"{path}:{pos[0]}:{pos[1]}"


def validation_problems(exc: pydantic.ValidationError, path: Path, lines: dict[tuple, Any],
                        prefix: tuple = ()) -> list[str]:
    """One `file:line: field: message` per error; `prefix` is where the validated data sits in the file."""
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{located(path, lines, loc)}: {field_name(loc)}: {message}")
    return problems


def load_model(model: type[M], path: Path, *, env: bool = False, context: dict | None = None) -> M:
    """Read `path` and validate it as `model`, raising UserError with every problem located."""
    data, lines = read_yaml(path)
    if data is None:
        raise UserError(f"{path}: file is empty")
    if env:
        data = substitute_env(data, path)
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise UserError(validation_problems(exc, path, lines)) from None
