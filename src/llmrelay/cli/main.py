"""The `llmrelay` command: `chat`, `models`, `aliases`, `keys`, `replay`, `demo`, `logs`, `serve` (the gateway, `cli/serve.py`).

    llmrelay chat "Explain SSE in two lines" -m openai:gpt-4o-mini
    llmrelay chat                    # on a terminal: an interactive session
    llmrelay chat -c "And in one?"   # continue the last logged conversation (--cid ID: any)
    echo "Hi" | llmrelay chat -m ollama:gemma3:1b
    llmrelay models --provider openai
    llmrelay replay --port 8765      # offline: the bundled recordings on a local port
    llmrelay demo                    # offline: real recorded streams from a local replay server
    llmrelay logs totals             # what the logged calls cost

`chat` is in `cli/chat.py` (the interactive session in `cli/repl.py`, logs and -c/--cid in
`cli/conversation.py`); `models`/`aliases`/`keys` in `cli/manage.py` (their files in
`cli/config.py`); `replay` in `cli/replay.py`; `logs` in `cli/logs.py`; shared helpers in `cli/common.py`.

`import llmrelay` never imports this module; rich is imported only by the
commands that draw on a terminal (see `cli/render.py`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .. import __version__
from ..errors import LLMRelayError

from .common import EXIT_INTERRUPTED, EXIT_ERROR, EXIT_OK, EXIT_USAGE, _err, describe_error

# -- argument parsing ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrelay",
        description="Stream LLM responses from any provider behind one interface.",
    )
    parser.add_argument("--version", action="version", version=f"llmrelay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{chat,models,aliases,keys,replay,demo,logs,serve}")

    from .chat import add_arguments, epilog

    chat = sub.add_parser(
        "chat",
        help="stream an answer to the terminal (logged; -c continues the last conversation)",
        description="Stream an answer to the terminal (live Markdown on a TTY, plain text otherwise).\n"
        "Stats (tokens, timings, cost) go to stderr.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(chat)

    from .manage import register as register_manage
    from .replay import register as register_replay

    register_manage(sub)
    register_replay(sub)

    demo = sub.add_parser("demo", help="offline demo: real recorded streams from a local replay server")
    demo.add_argument("--fast", action="store_true", help="no pacing (for tests)")
    demo.add_argument("--plain", action="store_true", help="plain text even on a terminal")

    from .logs import register as register_logs

    register_logs(sub)
    from .serve import register as register_serve

    register_serve(sub)
    return parser


# -- chat (in cli/chat.py) ------------------------------------------------------------------


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import cmd_chat as run_chat

    return run_chat(args)


# -- models, aliases, keys (cli/manage.py); replay (cli/replay.py) --------------------------


def cmd_manage(args: argparse.Namespace) -> int:
    from .manage import run

    return run(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import run

    return run(args)


# -- entry point ------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(fast=args.fast, plain=args.plain)


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"chat": cmd_chat, "models": cmd_manage, "aliases": cmd_manage, "keys": cmd_manage,
               "replay": cmd_replay, "demo": cmd_demo, "logs": cmd_logs, "serve": cmd_serve}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        _err("\nllmrelay: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`llmrelay chat … | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_ERROR
    except LLMRelayError as exc:
        _err(f"llmrelay: {describe_error(exc)}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
