"""Operating the daemon: Prometheus metrics with health endpoints (metrics.py) and key=value logs (logs.py)."""
