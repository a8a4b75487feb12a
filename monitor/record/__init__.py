"""The regulated violation record: tables (schema), db (engines, migrations), ledger (hash chains,
audit events), spool + writer (durable, in-order writes), review (users and electronic signatures)."""
