"""The one YAML reader: whatever a file holds, a located UserError or data with the line of every field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.errors import UserError
from monitor.rules.ruleset import check_rules
from monitor.site.config import SiteConfig
from monitor.yamlfile import ALIAS_BUDGET, MAX_DEPTH, load_model, parse_yaml
from support.examples import examples
from support.memory import alias_bomb

PATH = Path("site.yaml")
YAML_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as a line break
LOCATED = re.compile(rf"^{re.escape(str(PATH))}(?::(\d+):(\d+))?: ")

# Text made mostly of YAML's own syntax, so that documents get deep into the parser, not only its scanner.
TOKENS = [*"ab7:-[]{},&*!|>'\"#%@?<=~ \n\t.", "!!", "<<", "*a", "&a", "---", "2024-13-45", ".inf", "\n  - "]
syntax = st.lists(st.one_of(st.sampled_from(TOKENS), st.characters(exclude_categories=["Cs"])), max_size=60).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


def yaml_lines(text: str) -> int:
    return len(YAML_BREAK.split(text))


def assert_located(err: UserError, text: str) -> None:
    """One message naming the file, and a line and column inside it when it gives them."""
    assert len(err.problems) == 1
    match = LOCATED.match(err.problems[0])
    assert match, err.problems[0]
    if match.group(1):
        assert 1 <= int(match.group(1)) <= yaml_lines(text) and int(match.group(2)) >= 1, (err.problems[0], text)


@settings(max_examples=examples(300))
@given(text=syntax)
@example("a: [" * 2000)  # deeper than the stack would allow
@example("a: 2024-13-45\n")  # PyYAML raises ValueError for an impossible date
@example("n: " + "7" * 5000 + "\n")  # and for an integer longer than 4300 digits
@example("a: !!timestamp soon\nb: !!bool maybe\nc: !!float x\nd: !!int 0x\n")  # and AttributeError, KeyError
@example("a: &a [*a]\n")  # a recursive alias
@example("a: &a {<<: *a}\n")
@example(alias_bomb(9))
def test_any_text_parses_or_is_one_located_error(text):
    try:
        _, marks = parse_yaml(text, PATH)
    except UserError as err:
        assert_located(err, text)
        return
    for line, column in marks.values():
        assert 1 <= line <= yaml_lines(text) and column >= 1


@settings(max_examples=examples(200))
@given(data=documents, flow=st.sampled_from([False, None]))
@example(data={"on": None}, flow=False)  # a YAML 1.1 boolean word as a key is written quoted
def test_every_field_is_marked_at_its_key(data, flow):
    """The line and column of a field are where its key is written (what each error message names)."""
    text = yaml.safe_dump(data, default_flow_style=flow, width=60)
    parsed, marks = parse_yaml(text, PATH)
    assert parsed == data
    lines = YAML_BREAK.split(text)

    def check(node, at: tuple) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                line, column = marks[(*at, key)]
                assert lines[line - 1][column - 1:].lstrip("'\"").startswith(key), (at, key, text)
                check(value, (*at, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                assert (*at, i) in marks
                check(value, (*at, i))

    check(data, ())


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(syntax, documents.map(yaml.safe_dump)))
def test_site_and_rule_files_of_any_text_are_loaded_or_refused_with_user_errors(tmp_path, text):
    path = tmp_path / "any.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_model(SiteConfig, path, env=True)
    except UserError as err:
        assert all(p.startswith(str(path)) for p in err.problems), err.problems
    found = check_rules([path], ["idle", "smoking"])
    assert all(p.startswith(str(path)) for p in found.errors), found.errors


@pytest.mark.parametrize("text, problem", [
    (alias_bomb(9), f"aliases expand to more than {ALIAS_BUDGET} nodes (an alias bomb?)"),
    ("base: &b {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7}\n"  # the same through merge keys
     + "".join(f"m{i}: &m{i} {{<<: [*{'b' if i == 0 else f'm{i - 1}'}, *{'b' if i == 0 else f'm{i - 1}'}]}}\n"
               for i in range(30)), f"aliases expand to more than {ALIAS_BUDGET} nodes (an alias bomb?)"),
    ("a: &a [1, *a]\n", "alias *a refers to the node that holds it"),
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"nested more than {MAX_DEPTH} levels deep"),
    ("when: 2024-13-45\n", "invalid value: month must be in 1..12"),
])
def test_what_would_exhaust_memory_or_the_stack_is_refused_at_its_line(text, problem):
    with pytest.raises(UserError) as caught:
        parse_yaml(text, PATH)
    assert_located(caught.value, text)
    assert caught.value.problems[0].endswith(f": invalid YAML: {problem}")


def test_aliases_within_the_budget_are_read():
    """Reuse as real sites write it: one camera's defaults merged into each of 500 cameras."""
    text = "defaults: &cam {enabled: true, loop: false, sample_fps: 4, stall_seconds: 10, open_timeout_seconds: 5}\n"
    text += "cameras:\n" + "".join(f"  - {{<<: *cam, id: cam-{i}, url: rtsp://10.0.0.{i % 250}/s}}\n" for i in range(500))
    data, marks = parse_yaml(text, PATH)
    assert len(data["cameras"]) == 500 and data["cameras"][499]["stall_seconds"] == 10
    line = next(n for n, text_line in enumerate(text.splitlines(), 1) if "cam-499" in text_line)
    assert marks[("cameras", 499, "id")] == (line, text.splitlines()[line - 1].index("id:") + 1)


def test_every_yaml_the_package_reads_goes_through_the_one_reader():
    """A `yaml.safe_load` elsewhere would read site.yaml, a rule file or model.yaml without these limits."""
    from support.assets import REPO

    readers = re.compile(r"\byaml\.(?:safe_load|load|full_load|unsafe_load|compose|parse|scan)\w*\(|\bLoader\b")
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "monitor").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if readers.search(line) and path.name != "yamlfile.py"]
    assert found == [], "read YAML with monitor.yamlfile (parse_yaml, read_yaml, load_model)"
