"""Where a learner group meets: a free port for torch.distributed's rendezvous. Kept apart from
the rank so the Ray task that picks it loads no model stack (its process may serve a worker next)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on `host`, for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
