"""`open_sockets(port)`: how many TCP sockets this process holds open to a local port (Linux,
read from /proc), to check that a client releases its connections (a test, a soak)."""

from __future__ import annotations

import os


def open_sockets(port: int) -> int:
    """Open TCP sockets of this process whose remote end is `port` (listening sockets excluded).
    Raises OSError where /proc is not available."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes and cols[3] != "0A":  # 0A: LISTEN
                count += 1
    return count
