"""Config you can discover: JSON Schemas for editors, and README's reference kept in step with the models."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
import yaml

from monitor.cli import main
from monitor.cli.config import README_END, README_START, SCHEMAS, json_schema, reference_markdown

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def schema_of(kind: str, capsys) -> dict:
    assert main(["config", "schema", kind]) == 0
    return json.loads(capsys.readouterr().out)


def readme_reference() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(README_START + "\n", 1)[1].split(README_END, 1)[0]


def schema_keys(schema: dict) -> set[str]:
    """Every key a file may hold, as `a.b` and `a[].b`, found by walking the JSON Schema."""
    defs = schema.get("$defs", {})
    keys: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        node = defs[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        for choice in node.get("anyOf", []) + node.get("oneOf", []):
            walk(choice, prefix)
        if node.get("type") == "array" and "items" in node:
            walk(node["items"], prefix + "[]")
        for values in [node.get("additionalProperties"), *node.get("patternProperties", {}).values()]:
            if isinstance(values, dict):  # a mapping of names to ...
                walk(values, prefix + ".<name>")
        for name, prop in node.get("properties", {}).items():
            key = f"{prefix}.{name}" if prefix else name
            keys.add(key)
            walk(prop, key)

    walk(schema, "")
    return keys


def readme_keys() -> dict[str, set[str]]:
    """The keys README's reference documents, per schema (by the section they are in)."""
    found: dict[str, set[str]] = {kind: set() for kind in SCHEMAS}
    kind = None
    for line in readme_reference().splitlines():
        heading = re.match(r"#### .*?(?:config schema (\w+)|(rule))", line)
        if heading:
            kind = heading.group(1) or "rules"
        row = re.match(r"\| `([^`]+)` \|", line)
        if row:
            found[kind].add(row.group(1))
    return found


def test_readme_reference_is_generated_from_the_models():
    assert readme_reference() == reference_markdown(), \
        "README's configuration reference is out of date: run `har-monitor config reference --readme README.md`"


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_every_key_of_the_models_is_in_the_readme_and_every_key_there_exists(kind):
    documented, exists = readme_keys()[kind], schema_keys(json_schema(kind))
    assert not exists - documented, f"keys missing from README's reference: {sorted(exists - documented)}"
    assert not documented - exists, f"README documents keys that do not exist: {sorted(documented - exists)}"


def test_every_key_has_a_description():
    rows = [line for line in readme_reference().splitlines() if line.startswith("| `")]
    undescribed = [line.split("`")[1] for line in rows if line.rstrip().endswith("|  |")]
    assert rows and not undescribed, f"keys without a Field(description=...): {undescribed}"


def examples() -> list[tuple[str, Path | str]]:
    """The configuration files this repository ships, and README's examples (by their `$schema=` line)."""
    readme = re.findall(r"```yaml\n# yaml-language-server: \$schema=(\w+)\.schema\.json\n(.*?)```",
                        README.read_text(encoding="utf-8"), re.S)
    assert {kind for kind, _ in readme} == {"site", "model", "rules"}
    return ([("rules", p) for p in sorted((REPO / "rules").glob("*.yaml"))]
            + [("ruletest", p) for p in sorted((REPO / "rules" / "tests").glob("*.yaml"))]
            + [("site", REPO / "deploy" / "compose" / "site.yaml")]
            + [(kind, text) for kind, text in readme])


def as_an_editor_reads(data: object) -> object:
    """YAML 1.2, as the language server reads it: a timestamp is a string (PyYAML's 1.1 makes it a datetime)."""
    if isinstance(data, dict):
        return {k: as_an_editor_reads(v) for k, v in data.items()}
    if isinstance(data, list):
        return [as_an_editor_reads(v) for v in data]
    return data.isoformat() if isinstance(data, datetime) else data


def messages(errors: list[jsonschema.ValidationError]) -> list[str]:
    """Each error's message and those of its causes (a `oneOf` says why each choice failed)."""
    return [m for e in errors for m in [e.message, *messages(list(e.context or []))]]


@pytest.mark.parametrize("kind, source", examples(), ids=lambda v: v.name if isinstance(v, Path) else str(v)[:20])
def test_shipped_and_documented_files_validate_against_their_schema(kind, source, capsys):
    schema = schema_of(kind, capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    data = as_an_editor_reads(yaml.safe_load(source.read_text() if isinstance(source, Path) else source))
    jsonschema.Draft202012Validator(schema).validate(data)


@pytest.mark.parametrize("kind, data, where", [
    ("site", {"site": "s", "model": "m", "cameras": [{"id": "c", "url": "a.mp4", "fps": 5}]}, "fps"),
    ("site", {"site": "s", "model": "m", "cameras": [{"id": "c", "url": "a.mp4"}],
              "evidence": {"retention_days": 1e300}}, "1e+300"),
    ("site", {"site": "s", "model": "m", "cameras": [{"id": "c", "url": "a.mp4"}],
              "reconnect": {"initial_seconds": 1e308}}, "1e+308"),
    ("model", {"backbone": {"name": "vgg99"}, "labels": ["a", "b"]}, "vgg99"),
    ("rules", {"rules": [{"id": "r", "kind": "absence", "action": "a", "every": "1 fortnight"}]}, "fortnight"),
    ("rules", {"rules": [{"id": "r", "kind": "sequence", "require": "a", "before": "b"}]}, "within"),
    ("rules", {"rules": [{"id": "r", "when": {"action": "a", "speed": 2}}]}, "speed"),
    ("ruletest", {"rules": ["r.yaml"], "labels": ["a"], "tests": [
        {"name": "t", "camera": {"id": "c"}, "start": "2024-05-06T10:00:00+02:00",
         "predictions": [{"at": 0, "probs": {"a": 2}}], "expect": []}]}, "2"),
])
def test_an_editor_flags_what_check_refuses(kind, data, where, capsys):
    found = messages(list(jsonschema.Draft202012Validator(schema_of(kind, capsys)).iter_errors(data)))
    assert any(where in m for m in found), found


def test_forbidden_rule_short_form_and_a_single_time_range_are_valid(capsys):
    rule = {"id": "r", "when": {"action": "a", "min_confidence": 0.9}, "schedule": {"between": ["22:00", "06:00"]}}
    jsonschema.Draft202012Validator(schema_of("rules", capsys)).validate({"rules": [rule]})
