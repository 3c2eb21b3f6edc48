"""The `llmrelay` command: `chat`, `models`, `demo`, `logs`.

    llmrelay chat "Explain SSE in two lines" -m openai:gpt-4o-mini
    echo "Hi" | llmrelay chat -m ollama:gemma3:1b
    llmrelay models
    llmrelay demo            # offline: real recorded streams from a local replay server

`import llmrelay` never imports this module; rich is imported only by the
commands that draw on a terminal (see `cli_render`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, Sequence

from . import __version__
from .errors import (
    APIError,
    InvalidRequestError,
    LLMRelayError,
    MissingAPIKeyError,
    ProviderStreamError,
    UnknownProviderError,
    UnsupportedParameterError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CONTINUE_NOT_AVAILABLE = (
    "llmrelay: -c/--continue is not available yet: it needs the conversation logs "
    "that arrive in a later release."
)


# -- argument parsing ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrelay",
        description="Stream LLM responses from any provider behind one interface.",
    )
    parser.add_argument("--version", action="version", version=f"llmrelay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{chat,models,demo,logs}")

    chat = sub.add_parser(
        "chat",
        help="stream an answer to the terminal",
        description="Stream an answer to the terminal (live Markdown on a TTY, plain text otherwise). "
        "Stats go to stderr.",
    )
    chat.add_argument("prompt", nargs="?", help="the prompt; read from stdin when absent or '-'")
    chat.add_argument("-m", "--model", required=True, help="provider:model, e.g. openai:gpt-4o-mini (see `llmrelay models`)")
    chat.add_argument("-s", "--system", help="system prompt")
    chat.add_argument(
        "-o", "--option", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
        help="a parameter, value parsed as JSON when possible: -o temperature 0.2 -o max_tokens 200 "
        "-o extra_body '{\"top_k\": 40}'",
    )
    chat.add_argument("--base-url", help="override the provider's base URL")
    chat.add_argument("--key", help="API key (default: the provider's env var, see `llmrelay models`)")
    chat.add_argument("--reasoning", action="store_true", help="show the model's reasoning, dimmed")
    chat.add_argument("--json", action="store_true", help="print each typed event as one JSON line")
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer, then print it")
    chat.add_argument("--plain", action="store_true", help="plain incremental text even on a terminal")
    chat.add_argument("-c", "--continue", dest="cont", action="store_true", help="continue the last conversation (not available yet)")

    models = sub.add_parser("models", help="list providers, their protocols and env vars")
    models.add_argument("--json", action="store_true", help="one JSON object per provider")

    demo = sub.add_parser("demo", help="offline demo: real recorded streams from a local replay server")
    demo.add_argument("--fast", action="store_true", help="no pacing (for tests)")
    demo.add_argument("--plain", action="store_true", help="plain text even on a terminal")

    from .logs.cli import register as register_logs

    register_logs(sub)
    return parser


def parse_value(raw: str) -> Any:
    """`0.2` -> 0.2, `["a"]` -> list, `true` -> True, anything else stays a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_options(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    return {key.replace("-", "_"): parse_value(value) for key, value in pairs}


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    """`RateLimitError: openai returned HTTP 429: …` plus the fields that help."""
    text = f"{type(exc).__name__}: {exc}"
    extra = []
    if isinstance(exc, ProviderStreamError):
        if exc.code is not None:
            extra.append(f"code={exc.code}")
        if exc.status_code is not None:
            extra.append(f"status={exc.status_code}")
    if isinstance(exc, APIError) and exc.request_id:
        extra.append(f"request_id={exc.request_id}")
    if extra:
        text += f" ({', '.join(extra)})"
    return text


# -- chat ---------------------------------------------------------------------------------


def _read_prompt(prompt: str | None) -> str | None:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        _err("Type your prompt, then Ctrl-D:")
    return sys.stdin.read()


def cmd_chat(args: argparse.Namespace) -> int:
    if args.cont:
        _err(CONTINUE_NOT_AVAILABLE)
        return EXIT_USAGE
    prompt = _read_prompt(args.prompt)
    if not prompt or not prompt.strip():
        _err("llmrelay: error: empty prompt (give it as an argument or on stdin)")
        return EXIT_USAGE
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    options = parse_options(args.option)
    if args.base_url:
        options["base_url"] = args.base_url
    if args.key:
        options["api_key"] = args.key

    from .client import Client

    client = Client()
    try:
        try:
            stream = client.stream(args.model, messages, **options)
        except UnknownProviderError as exc:
            _err(f"llmrelay: error: {exc}\nRun `llmrelay models` for the list with env vars.")
            return EXIT_USAGE
        except MissingAPIKeyError as exc:
            _err(f"llmrelay: error: {exc}\nOr pass --key.")
            return EXIT_USAGE
        except (InvalidRequestError, UnsupportedParameterError) as exc:
            _err(f"llmrelay: error: {exc}")
            return EXIT_USAGE
        except ImportError as exc:
            _err(f"llmrelay: error: the wire protocol for {args.model!r} is not available in this build ({exc})")
            return EXIT_ERROR
        if args.json:
            return _chat_json(stream)
        return _chat_terminal(stream, args)
    finally:
        client.close()


def _ignore_sigint() -> Any:
    """During cleanup a second Ctrl-C must not leave a traceback or a half-closed stream."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return None


def _restore_sigint(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old)


def _chat_terminal(stream: Any, args: argparse.Namespace) -> int:
    from .cli_render import Out, feed_view, stats_line

    out = Out(sys.stdout, plain=args.plain)
    info = Out(sys.stderr, plain=args.plain)
    error: BaseException | None = None
    interrupted = False
    view = None
    try:
        if args.no_stream:
            stream.collect()
        else:
            view = out.view(show_reasoning=args.reasoning, hidden_hint=" (--reasoning shows it)")
            for event in stream:
                feed_view(view, event)
    except KeyboardInterrupt:
        interrupted = True
    except APIError as exc:
        error = exc
    finally:
        old = _ignore_sigint()
        try:
            if view is not None:
                view.close()
            stream.close()  # closes the connection now if the stream did not finish
        finally:
            _restore_sigint(old)
    response = stream.response
    if args.no_stream and not interrupted:
        _print_whole(out, response, args.reasoning)
    note = None
    if interrupted:
        note = "(interrupted)"
    elif error is not None:
        note = "(error: partial answer)"
    elif response.status == "truncated":
        note = "(truncated: output limit reached)"
    call = stream.call  # None if the stream never started a request
    provider = response.provider or (call.provider.name if call is not None else "")
    served = response.model or (call.model if call is not None else args.model)
    info.line(f"{provider} · {served} · " + stats_line(response, stream.usage, note=note), style="dim")
    if error is not None:
        _err(f"llmrelay: {describe_error(error)}")
        return EXIT_ERROR
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _print_whole(out: Any, response: Any, show_reasoning: bool) -> None:
    from .cli_render import PlainView

    if out.console is not None:
        from rich.markdown import Markdown
        from rich.text import Text

        if show_reasoning and response.reasoning:
            out.console.print(Text(response.reasoning.strip("\n"), style="dim italic"))
            out.console.print()
        if response.text:
            out.console.print(Markdown(response.text))
        if response.refusal:
            out.console.print(Text("refusal: " + response.refusal, style="red"))
        for call in response.tool_calls:
            out.console.print(Text(f"→ tool call {call.name}({call.arguments_json})", style="cyan"))
        return
    view = PlainView(out.stream, show_reasoning=show_reasoning)
    if response.reasoning:
        view.reasoning(response.reasoning)
    view.text(response.text)
    if response.refusal:
        view.refusal(response.refusal)
    for call in response.tool_calls:
        view.tool_call(call.name, call.arguments_json)
    view.close()


def _chat_json(stream: Any) -> int:
    from .cli_render import json_line, to_plain

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json_line(obj) + "\n")
        sys.stdout.flush()

    error: BaseException | None = None
    interrupted = False
    try:
        for event in stream:
            emit(to_plain(event))
    except KeyboardInterrupt:
        interrupted = True
    except APIError as exc:
        error = exc
    finally:
        old = _ignore_sigint()
        try:
            stream.close()
        finally:
            _restore_sigint(old)
    if error is not None:
        emit({
            "type": "error",
            "error": type(error).__name__,
            "message": str(error),
            "code": getattr(error, "code", None),
            "status": getattr(error, "status_code", None),
        })
    r = stream.response
    emit({
        "type": "done",
        "status": "interrupted" if interrupted else r.status,
        "provider": r.provider,
        "model": r.model,
        "finish_reason": r.finish_reason,
        "usage": to_plain(r.usage),
        "timings": r.timings.to_dict(),
    })
    if error is not None:
        _err(f"llmrelay: {describe_error(error)}")
        return EXIT_ERROR
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


# -- models -------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from .cli_render import PROVIDER_HEADERS, Out, base_url_env_vars, json_line, key_env_vars, provider_rows
    from .providers import PROVIDERS

    if args.json:
        for p in PROVIDERS.values():
            print(json_line({
                "name": p.name, "protocol": p.protocol, "base_url": p.base_url,
                "api_key_env": list(key_env_vars(p)), "requires_key": p.requires_key,
                "base_url_env": list(base_url_env_vars(p)), "description": p.description,
            }))
        return EXIT_OK
    out = Out(sys.stdout)
    out.table(PROVIDER_HEADERS, provider_rows(PROVIDERS.values()), title="Providers (use as provider:model)")
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(fast=args.fast, plain=args.plain)


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs.cli import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"chat": cmd_chat, "models": cmd_models, "demo": cmd_demo, "logs": cmd_logs}[args.command]
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
