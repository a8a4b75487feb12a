"""A site: its configuration (site.yaml, config.py) and the up-front check of everything it names (check.py)."""
