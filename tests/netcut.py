"""A network link that can be cut: a TCP proxy on loopback (tests only).

Killing a process closes its sockets, and the peer's kernel says so (FIN or RST): that
is a process dying, not a link dying. A link that dies (a cable, a NAT or a firewall
forgetting the connection, a suspended VM) says nothing at all: both ends keep their
sockets, and what one sends never reaches the other. Without root (no iptables, no
network namespaces) this proxy is that link: `cut()` stops forwarding in both
directions without closing anything, and connections made after the cut are accepted
and then ignored, like SYNs into a black hole that happen to get an answer from the
proxy's kernel.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


class CuttableLink:
    """127.0.0.1:<port> → target, until `cut()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.is_cut = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.connections = 0  # accepted so far (before and after the cut)
        threading.Thread(target=self._accept, name=f"netcut-{self.port}", daemon=True).start()

    def cut(self) -> None:
        """From now on nothing passes, either way; every socket stays open."""
        self.is_cut.set()

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            self.connections += 1
            if self.is_cut.is_set():
                continue  # held open, never answered
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self.sockets.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Both directions in one thread; after the cut it stops reading (the kernel
        buffers fill, then senders block, as on a dead link) and waits for `close`."""
        peer = {a: b, b: a}
        open_ends = {a, b}
        while open_ends and not self.is_cut.is_set() and not self.closed.is_set():
            ready, _, _ = select.select(list(open_ends), [], [], 0.1)
            if self.is_cut.is_set():
                break
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    with contextlib.suppress(OSError):
                        peer[sock].sendall(data)
                    continue
                # a clean end from one side passes on as long as the link lives
                open_ends.discard(sock)
                with contextlib.suppress(OSError):
                    peer[sock].shutdown(socket.SHUT_WR)
        self.closed.wait()


@contextlib.contextmanager
def cuttable_link(target_host: str, target_port: int) -> Iterator[CuttableLink]:
    link = CuttableLink(target_host, target_port)
    try:
        yield link
    finally:
        link.close()


def known_hosts_through(known_hosts: Path, port: int, link: CuttableLink, out: Path) -> Path:
    """`known_hosts` with every `[host]:port` entry also under the link's port (the
    same server's keys, reached through the link)."""
    lines = known_hosts.read_text().splitlines()
    extra = [
        line.replace(f"]:{port} ", f"]:{link.port} ", 1) for line in lines if f"]:{port} " in line
    ]
    out.write_text("\n".join([*lines, *extra]) + "\n")
    return out
