"""Test helper: a small threaded TCP proxy that can simulate a server outage.

    from support.tcpproxy import TcpProxy

    with TcpProxy("127.0.0.1", 5432) as proxy:   # listens on 127.0.0.1:<proxy.port>
        ...                                      # clients connect to proxy.port
        proxy.pause()    # drop every current connection, refuse new ones (port closed)
        proxy.resume()   # accept again on the SAME port
        proxy.hang()     # the server hangs: connections stay open, new ones are accepted, nothing answers
        proxy.resume()   # the hung connections are dropped (like a server restart); new ones work again
    # stop() (or leaving the block) closes everything

`close_all()` only drops the current connections (new ones are still accepted).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0,
                 connect_timeout: float = 5.0):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port  # the real port once started; kept across pause()/resume()
        self.connect_timeout = connect_timeout
        self.accepted = 0  # connections accepted so far (all time)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accepting = threading.Event()
        self._hung = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._listen()
        return self

    def pause(self) -> None:
        """The server "goes down": stop listening (connection refused) and drop every connection."""
        self._stop_listening()
        self.close_all()

    def resume(self) -> None:
        """The server is back, on the same port (after a hang, its connections are dropped: their data was lost)."""
        if self._hung.is_set():
            self._hung.clear()
            self.close_all()
        if self._listener is None:
            self._listen()

    def hang(self) -> None:
        """The server hangs without refusing: TCP connects and is acknowledged, but no byte is forwarded or answered.

        Unlike `pause()`, nothing fails fast: only a client's own timeouts get it out."""
        self._hung.set()

    def stop(self) -> None:
        self.pause()

    def close_all(self) -> None:
        """Drop every current connection, both sides, abruptly (RST)."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            _abort(sock)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def paused(self) -> bool:
        return self._listener is None

    def connections(self) -> int:
        """Sockets currently open (two per proxied connection)."""
        with self._lock:
            return len(self._conns)

    # -- internals -------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind despite TIME_WAIT
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener,), name=f"tcpproxy-{self.port}",
                                          daemon=True)
        self._acceptor.start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._accepting.clear()
        if self._acceptor is not None:
            self._acceptor.join(5)  # wakes within one select() timeout
        listener.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while self._accepting.is_set():
                if not sel.select(timeout=0.05):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                self.accepted += 1
                threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        if self._hung.is_set():  # accepted, and then nothing: the client waits for an answer that never comes
            with self._lock:
                self._conns.add(client)
            self._pump(client, None)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            upstream.settimeout(None)
        except OSError:
            _abort(client)
            return
        with self._lock:
            if not self._accepting.is_set():  # paused meanwhile
                _abort(client)
                _abort(upstream)
                return
            self._conns.update((client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if dst is not None and not self._hung.is_set():  # hung: read (so TCP acknowledges it) and drop
                    dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)
        _abort(src)
        if dst is not None:
            _abort(dst)


def _abort(sock: socket.socket) -> None:
    """Close with a reset, waking any thread blocked in recv() on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
