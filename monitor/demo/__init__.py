"""`har-monitor demo`: synthetic clips of a stick figure (synthetic.py) and a self-contained site built from them (demo.py)."""
