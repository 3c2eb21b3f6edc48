"""`llmrelay chat`: stream an answer, log it, continue any logged conversation.

    llmrelay chat "Explain SSE in two lines" -m openai:gpt-4o-mini
    llmrelay chat                                  # on a terminal: an interactive session (cli/repl.py)
    llmrelay chat -c "Shorter, please"             # same model, the whole conversation so far
    llmrelay chat --cid 3f2a9c "And in French?"    # continue any logged conversation
    llmrelay chat "What is this?" -a photo.jpg     # attachments and --schema: cli/inputs.py
    llmrelay chat "Hi" -m ollama:gemma3:1b --no-log

Logging is on by default (as in simonw/llm): every chat is a row in
`llmrelay.logs` (`LLMRELAY_LOG` if set, else the default SQLite file), tagged
with its conversation id, which is what `-c`/`--cid` read back and `llmrelay
logs` shows (see `cli/conversation.py`). An interrupted answer (Ctrl-C) is kept
on screen and logged with status "aborted". Without `-m`: the default model
(`llmrelay models default`); aliases and stored keys come from `cli/config.py`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, _err, describe_error, parse_options
from .conversation import (
    NOTHING_TO_CONTINUE,
    NothingToContinue,
    _ignore_sigint,
    _restore_sigint,
    conversation_id_of,
    flush_log,
    last_conversation,
    log_target,
    new_conversation_id,
    open_log,
    read_target,
    with_system,
)
from ..errors import (
    APIError,
    InvalidRequestError,
    MissingAPIKeyError,
    OutputRefusedError,
    OutputValidationError,
    UnknownProviderError,
    UnsupportedParameterError,
)


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

interactive (no prompt, on a terminal):
  A multi-turn session: each answer streams, then "> " asks for the next turn;
  every turn is logged to the same conversation. !multi starts multi-line input
  (ended by !end), Ctrl-C stops the current answer and keeps the session,
  Ctrl-D or "exit" leaves. -c/--cid start from a logged conversation.

continue (-c, --cid ID):
  Sends the most recent logged conversation (-c), or the conversation ID (an
  id or a prefix of one, as `-v` and the interactive banner print it; a call's
  correlation id works too), then the new prompt; -m defaults to that
  conversation's model, -s replaces its system prompt. With nothing logged it
  exits 1: "llmrelay: error: nothing to continue: ...". Every chat has a
  conversation id: --conversation-id, else the continued conversation's, else
  a new one; `llmrelay logs list --conversation ID` shows its rows.

model, keys:
  -m defaults to `llmrelay models default`; aliases from `llmrelay aliases set`
  work wherever a model goes. A key stored with `llmrelay keys set` is used when
  none of the provider's env vars is set; --key wins over both.

exit status: 0 ok, 1 error (the partial answer is printed and logged),
2 usage (bad model, missing key, empty prompt), 130 interrupted."""


def add_arguments(chat: argparse.ArgumentParser) -> None:
    chat.add_argument("prompt", nargs="?",
                      help="the prompt; '-' or absent: read from stdin (absent on a terminal: an interactive session)")
    chat.add_argument("-m", "--model",
                      help="provider:model or an alias, e.g. openai:gpt-4o-mini (see `llmrelay models`); default: "
                      "`llmrelay models default`, or with -c/--cid the conversation's model")
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
    chat.add_argument("--cid", dest="cid", metavar="ID",
                      help="continue the logged conversation ID (or a prefix of it; a call's correlation id works too)")
    chat.add_argument("--conversation-id", metavar="ID",
                      help="your conversation id (logs, hooks, traces); default: the continued one, or a new id")
    chat.add_argument("--correlation-id", metavar="ID",
                      help="your request id for this call (logs, hooks, traces; the first turn of a session); "
                      "default: a generated id")
    chat.add_argument("-a", "--attachment", action="append", default=[], metavar="FILE|URL",
                      help="attach an image (repeatable); a URL is downloaded first for providers that need inline data")
    chat.add_argument("--functions", action="append", default=[], metavar="FILE.py|CODE",
                      help="Python functions the model may call as tools (a file or inline code; repeatable)")
    chat.add_argument("--schema", metavar="SCHEMA",
                      help="structured output: a JSON schema (inline or a file) or the concise "
                      "'name, age int, bio: description' syntax; prints the validated JSON")
    chat.add_argument("--db", metavar="PATH",
                      help="the log store (SQLite path or postgresql:// DSN) that -c reads and the call is logged to")
    where = chat.add_mutually_exclusive_group()
    where.add_argument("--log", nargs="?", const=True, default=None, metavar="PATH",
                       help="log this call (the default), to PATH if given; put it after the prompt or write --log=PATH")
    where.add_argument("--no-log", action="store_true", help="do not log this call")


# -- one chat: its settings, history and client ----------------------------------------------


@dataclass
class Chat:
    """What every turn of a chat shares: the client, model, options and the conversation so far."""

    args: argparse.Namespace
    client: Any
    hook: Any
    model: str
    options: dict[str, Any]
    messages: list[Any] = field(default_factory=list)
    conversation_id: str = ""
    schema: dict[str, Any] | None = None
    #: The last turn's response (None before the first): what -v reports as logged.
    last_response: Any = None


class UsageProblem(Exception):
    """A configuration or usage error found before any request (exit 2, or 1 for nothing to continue)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _read_prompt(prompt: str | None) -> str | None:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        _err("Type your prompt, then Ctrl-D:")
    return sys.stdin.read()


def interactive(args: argparse.Namespace) -> bool:
    """No prompt, a terminal on both ends, and not --json: an interactive session."""
    return args.prompt is None and not args.json and _isatty(sys.stdin) and _isatty(sys.stdout)


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_chat(args: argparse.Namespace) -> int:
    if isinstance(args.log, str) and args.db and args.log != args.db:
        _err("llmrelay: error: --db and --log=PATH name different stores; give one of them")
        return EXIT_USAGE
    if args.cont and args.cid:
        _err("llmrelay: error: give -c (the last conversation) or --cid ID, not both")
        return EXIT_USAGE
    repl = interactive(args)
    prompt = None
    if not repl:
        prompt = _read_prompt(args.prompt)
        if not prompt or not prompt.strip():
            _err("llmrelay: error: empty prompt (give it as an argument or on stdin)")
            return EXIT_USAGE
    try:
        chat = open_chat(args)
    except UsageProblem as exc:
        _err(str(exc))
        return exc.code
    try:
        if repl:
            from .repl import run_repl

            return run_repl(chat, lambda text, attachments: send(chat, text, attachments))
        return send(chat, prompt or "", args.attachment)
    finally:
        chat.client.close()
        flush_log(chat.hook, chat.last_response, args.verbose, chat.conversation_id)


def open_chat(args: argparse.Namespace) -> Chat:
    """The model (-m, the conversation's, or the default), the history (-c, --cid), the client."""
    from . import config
    from .inputs import InputError, load_functions, parse_schema

    try:
        settings = config.load_config()
        aliases = dict(settings.get("aliases") or {})
    except config.ConfigError as exc:
        raise UsageProblem(f"llmrelay: error: {exc}") from None
    messages: list[Any] = []
    model = args.model
    conversation_id = args.conversation_id
    if args.cont or args.cid:
        try:
            messages, logged_model, row = last_conversation(read_target(args), args.cid)
        except NothingToContinue as exc:
            raise UsageProblem(f"{NOTHING_TO_CONTINUE}{exc}", EXIT_ERROR) from None
        model = model or logged_model
        conversation_id = conversation_id or conversation_id_of(row)
        if args.verbose:
            _err(f"continuing conversation {conversation_id} from call {row['correlation_id']} "
                 f"({len(messages)} messages, {logged_model}, status {row['status']})")
    if not model:
        model = settings.get("default_model") if isinstance(settings.get("default_model"), str) else None
    if not model:
        raise UsageProblem("llmrelay: error: -m/--model is required (with -c it defaults to the conversation's "
                           "model; set a default with `llmrelay models default provider:model`)")
    if args.system:
        messages = with_system(messages, args.system)
    options = parse_options(args.option)
    if args.base_url:
        options["base_url"] = args.base_url
    if args.key:
        options["api_key"] = args.key
    schema = None
    try:
        if args.schema:
            schema = parse_schema(args.schema)
        if args.functions:
            options["tools"] = load_functions(args.functions)
    except InputError as exc:
        raise UsageProblem(f"llmrelay: error: {exc}") from None

    from ..client import Client
    from ..providers import PROVIDERS

    try:
        keys = config.stored_keys_for_client(PROVIDERS)
    except config.ConfigError as exc:
        raise UsageProblem(f"llmrelay: error: {exc}") from None
    hook = open_log(log_target(args))
    client = Client(log=False, hooks=[hook] if hook is not None else [], aliases=aliases, api_keys=keys)
    # the CLI is the caller here: a new chat starts a conversation of its own
    return Chat(args, client, hook, model, options, messages, conversation_id or new_conversation_id(), schema)


def send(chat: Chat, text: str, attachments: list[str]) -> int:
    """One user turn: `text` plus the images `attachments` name (files or URLs)."""
    from .inputs import user_message

    try:
        parts = [attach(chat, spec) for spec in attachments]
    except UsageProblem as exc:
        _err(str(exc))
        return exc.code
    return run_turn(chat, user_message(text, parts))


def attach(chat: Chat, spec: str) -> Any:
    """An `ImagePart` for `-a SPEC`, downloaded first when the model's protocol needs inline data."""
    from .inputs import InputError, attachment

    try:
        return attachment(spec, protocol_of(chat))
    except InputError as exc:
        raise UsageProblem(f"llmrelay: error: {exc}") from None


def protocol_of(chat: Chat) -> str | None:
    from ..engine.prepare import resolve_model
    from ..errors import LLMRelayError

    model: Any = chat.client.aliases.get(chat.model, chat.model)
    if isinstance(model, (list, tuple)):
        model = model[0] if model else ""
    try:
        provider, _ = resolve_model(chat.client.settings, model, chat.options.get("provider"))
    except LLMRelayError:
        return None
    return provider.protocol


# -- one turn ----------------------------------------------------------------------------------------


def run_turn(chat: Chat, user: Any) -> int:
    """Send the conversation plus `user`, show the answer; the answer (partial if cut) joins the history."""
    args = chat.args
    chat.messages.append(user)
    params = dict(chat.options)
    params["conversation_id"] = chat.conversation_id
    if args.correlation_id and chat.last_response is None:
        params["correlation_id"] = args.correlation_id
    if chat.schema is not None:
        params["output"] = chat.schema
    try:
        stream = chat.client.stream(chat.model, list(chat.messages), **params)
    except KeyboardInterrupt:  # before the request: the turn never happened
        chat.messages.pop()
        raise
    except UnknownProviderError as exc:
        return _refused(chat, f"{exc}\nRun `llmrelay models` for the list with env vars.")
    except MissingAPIKeyError as exc:
        return _refused(chat, f"{exc}\nOr pass --key, or store one: llmrelay keys set PROVIDER.")
    except (InvalidRequestError, UnsupportedParameterError) as exc:
        return _refused(chat, str(exc))
    except ImportError as exc:
        chat.messages.pop()
        _err(f"llmrelay: error: the wire protocol for {chat.model!r} is not available in this build ({exc})")
        return EXIT_ERROR
    if args.json:
        code = _chat_json(stream, args)
    else:
        code = _chat_terminal(stream, args, chat)
    response = chat.last_response = stream.response
    answer = response.text or ""
    if answer:
        chat.messages.append({"role": "assistant", "content": answer})
    return code


def _refused(chat: Chat, message: str) -> int:
    chat.messages.pop()
    _err(f"llmrelay: error: {message}")
    return EXIT_USAGE


def _chat_terminal(stream: Any, args: argparse.Namespace, chat: Chat) -> int:
    from .render import Out, feed_view, stats_line
    from .. import events as ev

    out = Out(sys.stdout, plain=args.plain)
    info = Out(sys.stderr, plain=args.plain)
    error: BaseException | None = None
    interrupted = False
    view: Any = None
    output_view: Any = None
    try:
        if args.no_stream:
            stream.collect()
        elif chat.schema is not None:
            from .inputs import OutputView

            output_view = OutputView(out.console)
            for event in stream:
                if type(event) is ev.PartialOutput:
                    output_view.partial(event.value)
        else:
            view = out.view(show_reasoning=args.reasoning, hidden_hint=" (--reasoning shows it)")
            for event in stream:
                feed_view(view, event)
    except KeyboardInterrupt:
        interrupted = True
    except (APIError, OutputValidationError, OutputRefusedError) as exc:
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
    if output_view is not None:
        output_view.close(None if error or interrupted else response.output, out.stream)
    elif args.no_stream and chat.schema is not None:
        from .inputs import OutputView

        OutputView(None).close(None if error or interrupted else response.output, out.stream)
    elif args.no_stream:
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
    served = response.model or (call.model if call is not None else chat.model)
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
    except (APIError, OutputValidationError, OutputRefusedError) as exc:
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
