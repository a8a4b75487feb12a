"""har-monitor: real-time camera compliance monitor for regulated manufacturing floors."""

__version__ = "0.1.0"
