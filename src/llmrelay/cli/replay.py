"""`llmrelay replay`: the replay server on a port, answering with the bundled recordings.

    llmrelay replay --port 8765
    llmrelay chat "hi" -m openai-compatible:x --base-url http://127.0.0.1:8765/v1

Each request gets a recording picked by `llmrelay.testing.routes.by_request`:
the protocol from the path, a recording named by the model (`-m
openai-compatible:parallel_tool_calls`), else the protocol's plain text answer;
`--recording NAME` answers every request with one recording. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .common import EXIT_OK, EXIT_USAGE, _err


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="serve the bundled real recordings on a local port (offline provider)",
                       description="Start the replay server on 127.0.0.1 with the bundled recordings, so "
                       "`llmrelay chat --base-url ...` works offline. A recording is picked per request from "
                       "the protocol path and the model name (see --list).")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--recording", metavar="NAME", help="answer every request with this recording (see --list)")
    p.add_argument("--delay", type=float, default=0.02, metavar="S",
                   help="seconds between events, for realistic streaming (default 0.02; 0: as fast as possible)")
    p.add_argument("--list", action="store_true", help="list the bundled recordings and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print a line per request")


def run(args: argparse.Namespace) -> int:
    from ..testing import ReplayServer, wire_recordings
    from ..testing.routes import DEFAULTS, by_request

    if args.list:
        defaults = set(DEFAULTS.values())
        for name in wire_recordings():
            print(name + ("   (default)" if name in defaults else ""))
        return EXIT_OK
    try:
        handler = by_request(recording=args.recording, delay=max(0.0, args.delay),
                             on_pick=None if args.quiet else _announce)
    except FileNotFoundError as exc:
        _err(f"llmrelay: error: {exc} (see `llmrelay replay --list`)")
        return EXIT_USAGE
    server = ReplayServer(default=handler, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        _err(f"llmrelay: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_USAGE
    url = server.url
    print(f"replay server listening on {url}", flush=True)
    print(f"""  try:  llmrelay chat "hi" -m openai-compatible:x --base-url {url}/v1 --key x
        llmrelay chat "hi" -m anthropic:claude-sonnet-4-5 --base-url {url} --key x
        llmrelay chat "hi" -m openai-compatible:parallel_tool_calls --base-url {url}/v1 --key x
  base URLs: OpenAI-compatible {url}/v1 · Anthropic, Ollama, Cohere {url} · Gemini {url}/v1beta
  Ctrl-C stops the server.""", flush=True)
    stop = threading.Event()
    try:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill PID` stops it as Ctrl-C does
    except ValueError:  # not the main thread (main() called from a thread)
        pass
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print(f"\nreplay server stopped after {len(server.requests)} requests", flush=True)
    return EXIT_OK


def _announce(request: Any, name: str | None) -> None:
    from ..testing.routes import describe

    sys.stdout.write(f"{describe(request)} -> {name or '404 (no protocol uses this path)'}\n")
    sys.stdout.flush()
