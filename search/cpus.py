"""How many cores this process may use: its CPU affinity (what a container, a Ray worker or ``taskset``
gives it), not the machine's count. Decoder threads, shard-opening threads and query threads follow it."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
