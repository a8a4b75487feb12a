"""The rule text in force for a violation: its rule, found in the rule set stored under the
violation's `rules_hash` (monitor.record.rulesets), with its title and labels."""

from __future__ import annotations

import re
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import yaml

from monitor.errors import UserError
from monitor.record.rulesets import stored_ruleset
from monitor.record.tables import rule_sets
from monitor.yamlfile import compose_yaml

_FILE = re.compile(r"^# file: (.*)$", re.MULTILINE)  # how RuleSet.text starts each file


@dataclass(frozen=True)
class RuleText:
    rule: str
    title: str
    labels: dict[str, str]
    text: str  # the rule's own YAML, as written
    file: str
    first_seen: str  # when the daemon first ran this rule set (ISO, UTC)
    min_confidence: float | None = None


def split_files(text: str) -> list[tuple[str, str]]:
    """A stored rule set's text -> [(file, its YAML)]."""
    marks = list(_FILE.finditer(text))
    return [(m.group(1), text[m.end() + 1:marks[i + 1].start() if i + 1 < len(marks) else len(text)])
            for i, m in enumerate(marks)]


def _rules_in(yaml_text: str) -> list[tuple[dict, str]]:
    """Each rule mapping of a rule file with the text it is written as."""
    try:
        data, node = compose_yaml(yaml_text, Path("rule set"))
    except UserError:
        return []
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return []
    items = next((v.value for k, v in node.value if k.value == "rules" and isinstance(v, yaml.SequenceNode)), [])
    out = []
    for item, rule in zip(items, data["rules"], strict=False):
        if isinstance(rule, dict):  # from the start of its line: "- " and the indentation belong to it
            line_start = yaml_text.rfind("\n", 0, item.start_mark.index) + 1
            out.append((rule, textwrap.dedent(yaml_text[line_start:item.end_mark.index]).rstrip()))
    return out


class RuleTexts:
    """Rules by (rules_hash, rule id), parsed once per stored rule set (stored sets never change)."""

    def __init__(self) -> None:
        self._parsed: dict[str, dict[str, RuleText]] = {}
        self._lock = threading.Lock()

    def find(self, conn: sa.Connection, rules_hash: str, rule: str) -> RuleText | None:
        """The rule as it was in force, or None when that rule set is not stored (recorded before it was kept)."""
        with self._lock:
            parsed = self._parsed.get(rules_hash)
        if parsed is None:
            row = stored_ruleset(conn, rules_hash)
            if row is None:
                return None
            parsed = self._parse(row.text, row.first_seen.isoformat())
            with self._lock:
                self._parsed[rules_hash] = parsed
        return parsed.get(rule)

    def titles(self, conn: sa.Connection) -> dict[str, str]:
        """Rule id -> title, from the newest stored rule set that names it (for lists and filters)."""
        out: dict[str, str] = {}
        for row in conn.execute(sa.select(rule_sets.c.hash, rule_sets.c.text, rule_sets.c.first_seen)
                                .order_by(rule_sets.c.first_seen)):
            with self._lock:
                parsed = self._parsed.get(row.hash)
            if parsed is None:
                parsed = self._parse(row.text, row.first_seen.isoformat())
                with self._lock:
                    self._parsed[row.hash] = parsed
            out.update({rule: r.title for rule, r in parsed.items() if r.title})
        return out

    @staticmethod
    def _parse(text: str, first_seen: str) -> dict[str, RuleText]:
        found = {}
        for file, yaml_text in split_files(text):
            for rule, written in _rules_in(yaml_text):
                rule_id = str(rule.get("id", ""))
                labels = rule.get("labels") if isinstance(rule.get("labels"), dict) else {}
                when = rule.get("when") if isinstance(rule.get("when"), dict) else {}
                threshold = rule.get("min_confidence", when.get("min_confidence"))
                found[rule_id] = RuleText(rule_id, str(rule.get("title") or ""), {str(k): str(v) for k, v in labels.items()},
                                          written, file, first_seen,
                                          float(threshold) if isinstance(threshold, (int, float)) else None)
        return found
