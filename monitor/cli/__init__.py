"""The command line, one module per command group: run (run, check, demo), training (train, evaluate,
predict), rules, record (db, users, violations), zones (preview), console, config (schema, reference).
`main` parses and dispatches.

QA's commands must start fast: a command imports what it needs (TensorFlow only for run, check, demo
and training) inside its function, never at module level.
"""

from monitor.cli.main import main

__all__ = ["main"]
