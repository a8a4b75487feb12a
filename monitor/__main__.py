"""`python -m monitor` is `har-monitor`."""

import sys

from monitor.cli import main

sys.exit(main())
