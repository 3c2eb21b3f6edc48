"""`llmrelay serve --workers N`: one server out of N processes, for reloads and for `/metrics`.

uvicorn's own supervisor answers SIGHUP by starting new workers and stopping the
old ones (SIGTERM, then `timeout_graceful_shutdown`), which cuts streams longer
than that, pays a cold start per worker and resets each worker's metrics. Here:

- **Reload.** The supervisor (`Supervisor`, uvicorn's `Multiprocess` with another
  `handle_hup`) validates the file first (a broken file is refused with one log
  line, the workers keep theirs), then bumps the generation in `<dir>/reload`
  and sends SIGHUP to each worker that has signalled it is up (its metrics file
  exists). Each worker's `GatewayApp.reload` swaps the generation as in a single
  process: streams in flight finish on the configuration they started with. A
  worker that was starting (and could not be signalled yet) sees the new
  generation on its next tick, within `INTERVAL`.
- **Metrics.** The request path only updates in-memory counters (metrics.py).
  Once per `INTERVAL` each worker writes `snapshot()` to `<dir>/worker-<pid>-<random>.json`
  (write to a temporary name, then rename: readers never see half a file);
  `/metrics` on any worker is its own live values plus the other files. The
  supervisor folds the file of a worker that has exited into
  `<dir>/retired.json` (counters and histograms kept, gauges dropped), so the
  totals do not fall when a worker is replaced, and the directory holds at most
  N + 1 files. Another worker's values are at most `INTERVAL` old.

`<dir>` is private to the server (mode 0700, on /dev/shm when there is one: no
disk I/O), named by `LLMRELAY_GATEWAY_STATE` for the workers and removed when
the supervisor exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any, Callable

from .metrics import merge

__all__ = ["STATE_ENV", "INTERVAL", "Shared", "make_state_dir", "supervisor"]

STATE_ENV = "LLMRELAY_GATEWAY_STATE"
INTERVAL = 1.0
_RETIRED = "retired.json"
_RELOAD = "reload"
_MAX_FOLDED = 256  # worker ids remembered in retired.json (only needed while a reader may hold an old listing)

log = logging.getLogger("llmrelay.gateway")


def make_state_dir() -> str:
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="llmrelay-gateway-", dir=base)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None  # gone (folded, or the worker exited) or being replaced: skip it this once


def generation(directory: str) -> str | None:
    """The reload generation the supervisor wrote; None before the first reload (or with the directory gone)."""
    try:
        with open(os.path.join(directory, _RELOAD)) as f:
            return f.read()
    except OSError:
        return None


def _worker_files(directory: str) -> list[tuple[int, str, str]]:
    """(pid, id, path) of each worker file: `worker-<pid>-<random>.json` (the id outlives a reused pid)."""
    out = []
    for name in os.listdir(directory):
        if name.startswith("worker-") and name.endswith(".json"):
            try:
                out.append((int(name.split("-")[1]), name[:-5], os.path.join(directory, name)))
            except (ValueError, IndexError):
                continue
    return out


class Shared:
    """A worker's side: flush its metrics, read the others', follow reloads."""

    def __init__(self, directory: str, app: Any):
        self.dir = directory
        self.app = app
        self.pid = os.getpid()
        self.id = f"worker-{self.pid}-{os.urandom(4).hex()}"
        self.path = os.path.join(directory, self.id + ".json")
        self.seen = generation(directory)  # read before the config is loaded: a later bump reloads

    def flush(self, alive: bool = True) -> None:
        snap = self.app.metrics.snapshot()
        snap["id"], snap["alive"] = self.id, alive
        try:
            _write(self.path, json.dumps(snap, separators=(",", ":")).encode())
        except OSError as exc:  # the directory is gone (the supervisor exited): nothing to share with
            log.debug("metrics not shared: %s", exc)

    def on_hup(self) -> None:
        self.seen = generation(self.dir)
        self.app.reload()

    def tick(self) -> None:
        gen = generation(self.dir)
        if gen is not None and gen != self.seen:  # (a vanished directory is no reason to reload)
            self.seen = gen
            self.app.reload()
        self.flush()

    async def run(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(INTERVAL)
            try:
                self.tick()
            except Exception:  # never let the ticker die: metrics would freeze
                log.exception("gateway worker tick failed")

    def others(self) -> list[dict[str, Any]]:
        """The snapshots of the other workers and of those that exited, for `Metrics.render`."""
        snaps = [s for _, wid, path in _worker_files(self.dir) if wid != self.id
                 for s in [_read_json(path)] if isinstance(s, dict)]
        retired = _read_json(os.path.join(self.dir, _RETIRED))  # read after the workers' files (see fold)
        if isinstance(retired, dict):
            folded = set(retired.get("folded", ()))
            snaps = [s for s in snaps if s.get("id") not in folded]
            snaps.append(retired)
        return snaps


def fold(directory: str, live: set[int]) -> None:
    """Fold the files of workers no longer running into retired.json, then remove them. retired.json is
    written (naming the pid) before the file goes, and readers read the workers' files first, so a
    reader counts each worker exactly once whatever the interleaving."""
    dead = [(wid, path) for pid, wid, path in _worker_files(directory) if pid not in live]
    if not dead:
        return
    path = os.path.join(directory, _RETIRED)
    old = _read_json(path)
    data: dict[str, Any] = {}
    folded: list[str] = []
    if isinstance(old, dict):
        merge(data, old, gauges=False)
        folded = list(old.get("folded", ()))
    for wid, wpath in dead:
        snap = _read_json(wpath)
        if isinstance(snap, dict) and wid not in folded:
            merge(data, snap, gauges=False)
        folded.append(wid)
    out: dict[str, Any] = {name: [[list(k), v] for k, v in value.items()] for name, value in data.items()}
    out.update(alive=False, folded=folded[-_MAX_FOLDED:])
    _write(path, json.dumps(out, separators=(",", ":")).encode())
    for _, wpath in dead:
        try:
            os.remove(wpath)
        except OSError:
            pass


def supervisor(config: Any, sockets: list[Any], config_path: str, directory: str,
               check: Callable[[str], list[str]]) -> Any:
    """uvicorn's `Multiprocess`, with SIGHUP forwarded as a reload instead of restarting the workers.
    `check(path)` validates the file (raises) and returns its warnings (server.check)."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):  # type: ignore[misc]
        def handle_hup(self) -> None:
            try:
                for warning in check(config_path):
                    log.warning("%s", warning)
            except Exception as exc:
                log.error("config reload refused, the workers keep the running configuration: %s", exc)
                return
            _write(os.path.join(directory, _RELOAD), str(int(generation(directory) or 0) + 1).encode())
            up = {pid for pid, _, _ in _worker_files(directory)}
            for process in self.processes:
                if process.pid in up:
                    try:
                        os.kill(process.pid, signal.SIGHUP)
                    except OSError:
                        pass
            log.info("configuration reload sent to %d worker(s)", len(up))

        def keep_subprocess_alive(self) -> None:
            super().keep_subprocess_alive()
            try:
                fold(directory, {p.pid for p in self.processes if p.pid is not None})
            except OSError as exc:
                log.warning("could not fold the metrics of exited workers: %s", exc)

    return Supervisor(config, sockets=sockets)


def cleanup(directory: str) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
