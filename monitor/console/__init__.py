"""The QA review console: violations, evidence, signatures and the audit trail in a browser (`har-monitor console`)."""
