"""A free TCP port, chosen by the operating system rather than written into the code.

Fixed ports are why two jobs on one machine clash: the second one's rendezvous store cannot
bind. Binding to port 0 lets the kernel pick a port no one is listening on.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The port is released before it is returned, so another process could in principle take it
    before the caller binds it. :func:`helios.dist.spawn` avoids even that window by keeping its
    store's socket open; use this for launchers that need a port number up front (``torchrun
    --master-port``).

    Args:
        host: the address to bind; ``"127.0.0.1"`` for jobs on one machine.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port
