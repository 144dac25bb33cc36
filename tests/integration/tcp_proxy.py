"""A TCP proxy on loopback that a test can cut: what a database server that goes away mid-run
(a crash, a failover, a cable pulled) looks like to the client.

``cut()`` resets every open connection (RST, as a dead peer's kernel answers) and stops listening,
so that every reconnect is refused from then on.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; use as a context manager."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self.connections = 0  # accepted so far
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._close_all()

    def cut(self) -> None:
        """Reset every connection and refuse every new one."""
        self._cut.set()
        self._thread.join(10)
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            sockets = list(self._peers)
            self._peers.clear()
        for sock in sockets:
            _reset(sock)
        try:
            self._listener.close()
        except OSError:
            pass

    def _serve(self) -> None:
        while not (self._cut.is_set() or self._stop.is_set()):
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)  # type: ignore[arg-type]

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._peers[client], self._peers[upstream] = upstream, client
        self.connections += 1
        for sock in (client, upstream):
            self._selector.register(sock, selectors.EVENT_READ)

    def _pump(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._peers.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, other):  # one side closed: close the pair
            with self._lock:
                self._peers.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN: the peer's next read or write fails at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
