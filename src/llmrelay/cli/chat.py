"""`llmrelay chat`: stream one answer, log it, continue the last logged conversation.

    llmrelay chat "Explain SSE in two lines" -m openai:gpt-4o-mini
    llmrelay chat -c "Shorter, please"           # same model, the whole conversation so far
    llmrelay chat "Hi" -m ollama:gemma3:1b --no-log

Logging is on by default (as in simonw/llm): every chat is a row in
`llmrelay.logs` (`LLMRELAY_LOG` if set, else the default SQLite file), which is
what `-c` reads back and `llmrelay logs` shows. An interrupted answer (Ctrl-C)
is kept on screen and logged with status "aborted".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Any, Mapping

from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, _err, describe_error, parse_options
from ..errors import (
    APIError,
    InvalidRequestError,
    MissingAPIKeyError,
    UnknownProviderError,
    UnsupportedParameterError,
)

#: Seconds the command waits, at the end, for its log rows to be written.
FLUSH_TIMEOUT = 3.0

NOTHING_TO_CONTINUE = "llmrelay: error: nothing to continue: "


def epilog() -> str:
    from ..logs import default_path

    return f"""\
logging (on by default):
  Every chat is logged, with its status (ok, truncated, error, aborted), tokens,
  cost and timings, to $LLMRELAY_LOG when set (a SQLite path, a postgresql://
  DSN, or 1 for the default file), else to the default SQLite file:
    {default_path()}
  (moved by $LLMRELAY_LOG_DIR). --db PATH or --log=PATH picks another store;
  --no-log (or LLMRELAY_LOG=0, which --log overrides) skips it. An answer cut
  by Ctrl-C is kept and logged as "aborted". Read the logs: `llmrelay logs list`.

continue (-c):
  Sends the most recent logged conversation (its request messages and the
  answer, partial if it was interrupted) followed by the new prompt; -m
  defaults to that conversation's model, -s replaces its system prompt. With
  nothing logged it exits 1: "llmrelay: error: nothing to continue: ...".
  Every chat has a conversation id: --conversation-id, else the continued
  conversation's, else a new one; `llmrelay logs list --conversation ID`
  shows its rows.

exit status: 0 ok, 1 error (the partial answer is printed and logged),
2 usage (bad model, missing key, empty prompt), 130 interrupted."""


def add_arguments(chat: argparse.ArgumentParser) -> None:
    chat.add_argument("prompt", nargs="?", help="the prompt; read from stdin when absent or '-'")
    chat.add_argument("-m", "--model",
                      help="provider:model, e.g. openai:gpt-4o-mini (see `llmrelay models`); "
                      "with -c: the conversation's model by default")
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
    chat.add_argument("-v", "--verbose", action="store_true",
                      help="say where the cost came from (or why there is none) and where the call was logged")
    chat.add_argument("-c", "--continue", dest="cont", action="store_true",
                      help="continue the most recent logged conversation (and keep its conversation id)")
    chat.add_argument("--conversation-id", metavar="ID",
                      help="your conversation id (logs, hooks, traces); default: the continued one, or a new id")
    chat.add_argument("--correlation-id", metavar="ID",
                      help="your request id for this call (logs, hooks, traces); default: a generated id")
    chat.add_argument("--db", metavar="PATH",
                      help="the log store (SQLite path or postgresql:// DSN) that -c reads and the call is logged to")
    where = chat.add_mutually_exclusive_group()
    where.add_argument("--log", nargs="?", const=True, default=None, metavar="PATH",
                       help="log this call (the default), to PATH if given; put it after the prompt or write --log=PATH")
    where.add_argument("--no-log", action="store_true", help="do not log this call")


# -- where the logs are ----------------------------------------------------------------------


def read_target(args: argparse.Namespace) -> str | None:
    """The store named on the command line; None: `LLMRELAY_LOG`, else the default path."""
    return args.db or (args.log if isinstance(args.log, str) else None)


def log_target(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str | None:
    """Where this chat is logged (a SQLite path or a DSN), or None for not at all."""
    from ..logs import _OFF, _ON, ENV_VAR, default_path

    env = os.environ if env is None else env
    if args.no_log:
        return None
    explicit = read_target(args)
    if explicit:
        return explicit
    raw = (env.get(ENV_VAR) or "").strip()
    if raw and raw.lower() in _OFF and args.log is None:
        return None  # LLMRELAY_LOG=0 turns the default off; --log turns it back on
    if not raw or raw.lower() in _ON + _OFF:
        return default_path(env)
    return raw


def open_log(target: str | None) -> Any:
    """The `LogHook` writing to `target` (shared per store), its library warnings replaced by ours."""
    if target is None:
        return None
    from ..logs import hook_from
    from ..logs.writer import LogStoreWarning

    warnings.filterwarnings("ignore", category=LogStoreWarning)  # reported once, below, after the answer
    return hook_from(target)


def flush_log(hook: Any, response: Any, verbose: bool) -> None:
    if hook is None:
        return
    old = _ignore_sigint()
    try:
        done = hook.flush(FLUSH_TIMEOUT)
    finally:
        _restore_sigint(old)
    where = hook.store.describe()
    if not done:
        _err(f"llmrelay: warning: the log store {where} did not answer in {FLUSH_TIMEOUT:.0f} s; "
             "this call may not be logged")
    elif hook.stats.lost:
        _err(f"llmrelay: warning: this call was not logged: {hook.stats.last_error}")
    elif verbose and response is not None and response.correlation_id:
        cid = response.correlation_id
        _err(f"logged to {where} as call {cid} (`llmrelay logs show {cid[:12]}`)")


# -- continuing a conversation ---------------------------------------------------------------


class NothingToContinue(Exception):
    pass


def last_conversation(target: str | None) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """(messages, model, row) of the most recent logged request: its request messages, then its answer."""
    from ..logs import open_store

    store = open_store(target)
    where = store.describe()
    try:
        store.open(create=False)
        rows = store.recent(1)
    except FileNotFoundError:
        raise NothingToContinue(f"no conversation is logged at {where} (chat logs its calls unless --no-log "
                                "or LLMRELAY_LOG=0)") from None
    except Exception as exc:
        raise NothingToContinue(f"cannot read the logs at {where}: {type(exc).__name__}: {exc}") from None
    finally:
        store.close()
    if not rows:
        raise NothingToContinue(f"the log at {where} holds no conversation yet")
    row = rows[0]
    return conversation_from_row(row), model_of(row), row


def model_of(row: Mapping[str, Any]) -> str | None:
    requested = row.get("requested")
    if isinstance(requested, str) and ":" in requested and not requested.startswith("["):
        return requested
    model = row.get("requested_model") or row.get("model")
    return f"{row['provider']}:{model}" if row.get("provider") and model else None


def conversation_from_row(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's messages as `Client.stream` takes them, then the answer (partial or not)."""
    messages = [input_message(m) for m in row.get("request_messages") or []]
    answer = row.get("text") or ""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and isinstance(last["content"], str) \
            and not last.get("tool_calls"):
        answer = messages.pop()["content"] + answer  # an assistant prefill the row's text continues
    # The answer's own tool calls are left out: nothing answered them.
    if answer:
        messages.append({"role": "assistant", "content": answer})
    return messages


def input_message(m: Mapping[str, Any]) -> dict[str, Any]:
    """A logged message (`llmrelay.logs.rows.message_dict`) back to an input dict.

    Reasoning is not sent back (the log keeps no signature for it); an inline image the
    log did not keep becomes a note."""
    content = m.get("content")
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": p.get("text") or ""})
            elif kind == "image" and p.get("url"):
                parts.append({"type": "image_url", "image_url": {"url": p["url"]}})
            elif kind == "image":
                parts.append({"type": "text", "text": "[an image the log did not keep]"})
        if all(p["type"] == "text" for p in parts):
            content = "".join(p["text"] for p in parts)
        else:
            content = parts
    out: dict[str, Any] = {"role": m.get("role"), "content": content}
    for key in ("tool_call_id", "name", "is_error"):
        if m.get(key):
            out[key] = m[key]
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": tc.get("id"), "name": tc.get("name"),
             "arguments": tc["arguments"] if tc.get("arguments") is not None else (tc.get("raw_arguments") or "")}
            for tc in m["tool_calls"]
        ]
    return out


def with_system(messages: list[dict[str, Any]], system: str) -> list[dict[str, Any]]:
    rest = [m for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": system}, *rest]


# -- the command -------------------------------------------------------------------------------


def _read_prompt(prompt: str | None) -> str | None:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        _err("Type your prompt, then Ctrl-D:")
    return sys.stdin.read()


def cmd_chat(args: argparse.Namespace) -> int:
    if isinstance(args.log, str) and args.db and args.log != args.db:
        _err("llmrelay: error: --db and --log=PATH name different stores; give one of them")
        return EXIT_USAGE
    prompt = _read_prompt(args.prompt)
    if not prompt or not prompt.strip():
        _err("llmrelay: error: empty prompt (give it as an argument or on stdin)")
        return EXIT_USAGE
    messages: list[dict[str, Any]] = []
    model = args.model
    conversation = args.conversation_id
    if args.cont:
        try:
            messages, logged_model, row = last_conversation(read_target(args))
        except NothingToContinue as exc:
            _err(f"{NOTHING_TO_CONTINUE}{exc}")
            return EXIT_ERROR
        model = model or logged_model
        # rows logged before conversation ids: the first call of the conversation names it
        conversation = conversation or row.get("conversation_id") or row.get("correlation_id")
        if args.verbose:
            _err(f"continuing call {row['correlation_id']} ({len(messages)} messages, {logged_model}, "
                 f"status {row['status']})")
    if not model:
        _err("llmrelay: error: -m/--model is required (with -c it defaults to the conversation's model)")
        return EXIT_USAGE
    if args.system:
        messages = with_system(messages, args.system)
    messages.append({"role": "user", "content": prompt})
    options = parse_options(args.option)
    if args.base_url:
        options["base_url"] = args.base_url
    if args.key:
        options["api_key"] = args.key
    # the CLI is the caller here: a new chat starts a conversation of its own
    options["conversation_id"] = conversation or os.urandom(16).hex()
    if args.correlation_id:
        options["correlation_id"] = args.correlation_id

    from ..client import Client

    hook = open_log(log_target(args))
    client = Client(log=False, hooks=[hook] if hook is not None else [])
    stream = None
    try:
        try:
            stream = client.stream(model, messages, **options)
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
            _err(f"llmrelay: error: the wire protocol for {model!r} is not available in this build ({exc})")
            return EXIT_ERROR
        if args.json:
            return _chat_json(stream, args)
        return _chat_terminal(stream, args, model)
    finally:
        client.close()
        flush_log(hook, stream.response if stream is not None else None, args.verbose)


def _ignore_sigint() -> Any:
    """During cleanup a second Ctrl-C must not leave a traceback or a half-closed stream."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return None


def _restore_sigint(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old)


def _chat_terminal(stream: Any, args: argparse.Namespace, model: str) -> int:
    from .render import Out, feed_view, stats_line

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
            stream.close()  # closes the connection now if the stream did not finish (logged as aborted)
        finally:
            _restore_sigint(old)
    response = stream.response
    if args.no_stream:
        _print_whole(out, response, args.reasoning)  # what arrived, even if interrupted
    note = None
    if interrupted:
        note = "(interrupted)"
    elif error is not None:
        note = "(error: partial answer)"
    elif response.status == "truncated":
        note = "(truncated: output limit reached)"
    call = stream.call  # None if the stream never started a request
    provider = response.provider or (call.provider.name if call is not None else "")
    served = response.model or (call.model if call is not None else model)
    info.line(f"{provider} · {served} · " + stats_line(response, stream.usage, note=note, verbose=args.verbose),
              style="dim")
    if error is not None:
        _err(f"llmrelay: {describe_error(error)}")
        return EXIT_ERROR
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _print_whole(out: Any, response: Any, show_reasoning: bool) -> None:
    from .render import PlainView

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


def _chat_json(stream: Any, args: argparse.Namespace) -> int:
    from .render import cost_dict, json_line, to_plain

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
        "cost": cost_dict(r),
        "timings": r.timings.to_dict(),
        "correlation_id": r.correlation_id,
        "conversation_id": r.conversation_id,
    })
    if error is not None:
        _err(f"llmrelay: {describe_error(error)}")
        return EXIT_ERROR
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
