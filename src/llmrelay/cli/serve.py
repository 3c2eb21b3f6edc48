"""`llmrelay serve`: the OpenAI-, Anthropic- and Responses-compatible gateway (extra `gateway`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import EXIT_OK, EXIT_USAGE, _err


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gateway: OpenAI/Anthropic/Responses-compatible HTTP endpoints",
                       description="Serve /v1/chat/completions, /v1/messages and /v1/responses in front of llmrelay "
                       "(config: see llmrelay.gateway.config). SIGHUP reloads the config.")
    p.add_argument("--config", "-c", required=True, help="the gateway YAML file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (SIGHUP reloads each in place; /metrics covers them all)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--check", action="store_true", help="validate the config and exit")


def run(args: argparse.Namespace) -> int:
    try:
        from ..gateway.config import ConfigError
        from ..gateway import server
    except ImportError as exc:
        _err(f"llmrelay serve needs the gateway extra: pip install 'llmrelay[gateway]' ({exc})")
        return EXIT_USAGE
    if args.workers < 1:
        _err(f"llmrelay serve: --workers must be at least 1, got {args.workers}")
        return EXIT_USAGE
    try:
        warnings = server.check(args.config)
    except ConfigError as exc:
        _err(f"llmrelay serve: {exc}")
        return EXIT_USAGE
    except Exception as exc:  # a target that cannot be built (missing key, ...)
        _err(f"llmrelay serve: {args.config}: {exc}")
        return EXIT_USAGE
    for w in warnings:
        _err(f"llmrelay serve: warning: {w}")
    if args.check:
        store = server.probe_store(args.config)  # only here: a reload (which runs check) must not wait on it
        if store is not None:
            _err(f"llmrelay serve: warning: {store}")
        print(f"{args.config}: OK")
        return EXIT_OK
    try:
        server.serve(args.config, args.host, args.port, args.workers, args.log_level)
    except ImportError as exc:
        _err(f"llmrelay serve needs the gateway extra: pip install 'llmrelay[gateway]' ({exc})")
        return EXIT_USAGE
    return EXIT_OK
