"""Operating the daemon: the lifecycle of its threads (lifecycle.py), Prometheus metrics with health
endpoints (metrics.py) and key=value logs (logs.py)."""
