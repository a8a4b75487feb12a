"""Compliance rules: YAML rule files -> RuleSet -> RuleEngine (predictions in, violation episodes out).

schedule.py   when a rule is active (days, time ranges, time zone)
schema.py     the rule language: one pydantic model per kind (forbidden, sequence, duration, absence)
ruleset.py    load and lint rule files, every problem located as file:line:column
engine.py     the per rule x camera state machines, and which events each kind emits
ruletest.py   rule unit tests written in YAML (`har-monitor rules test`)
"""

from monitor.rules.engine import RuleEngine
from monitor.rules.ruleset import Findings, RuleSet, check_rules, load_rules
from monitor.rules.schema import RuleConfig, parse_rule

__all__ = ["Findings", "RuleConfig", "RuleEngine", "RuleSet", "check_rules", "load_rules", "parse_rule"]
