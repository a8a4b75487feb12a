"""SIGTERM stops the daemon whichever of its threads the kernel hands the signal to."""

from __future__ import annotations

import signal
import threading
import time

from monitor.cli.run import stop_on_signals
from monitor.pipeline.daemon import wait_for_stop


def test_a_sigterm_another_thread_receives_still_ends_the_daemons_wait():
    """Seen in a chaos run under heavy load: the daemon went on for 30 s after SIGTERM and was killed."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = stop_on_signals()
    rescued = threading.Event()

    def another_thread() -> None:
        time.sleep(0.5)  # the main thread is waiting by now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # this thread gets it, not the main one
        if not stop.wait(30):  # the handler never ran: end the wait for it, and say so
            rescued.set()
            stop.set()

    sender = threading.Thread(target=another_thread)
    sender.start()
    try:
        wait_for_stop(stop)
    finally:
        sender.join()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert not rescued.is_set(), "the SIGTERM handler ran only when something else woke the main thread"
