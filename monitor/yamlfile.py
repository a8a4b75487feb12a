"""Read YAML files with line numbers, `${VAR}` substitution and readable validation errors.

Every user-facing YAML file (site.yaml, model.yaml, rules) goes through `load_model`, so
each problem is reported the same way: `file:line: field: what was expected`.
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
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; return its data and the line (1-based) of each field path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node, at: tuple, lines: dict[tuple, int]) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[at + (key.value,)] = key.start_mark.line + 1
            _index_lines(value, at + (key.value,), lines)
            lines[at + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, at + (i,), lines)


def substitute_env(data: Any, path: Path, at: tuple = ()) -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string from the environment."""
    if isinstance(data, dict):
        return {k: substitute_env(v, path, at + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, path, at + (i,)) for i, v in enumerate(data)]
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


def validation_problems(exc: pydantic.ValidationError, path: Path, lines: dict[tuple, int]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        where = f"{path}:{line}" if line else str(path)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{where}: {field_name(loc)}: {message}")
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
