"""Where `chat` logs, and the logged conversations it continues (`-c`, `--cid`).

Every chat call carries `conversation_id=ID` (the `conversation_id` column of its log
rows): one id for every turn of an interactive session and for every call that
continues it, so `--cid ID` (an id, or a prefix of one, or a call's correlation id)
finds the conversation's latest row, whose request messages and answer are the
whole conversation so far.
"""

from __future__ import annotations

import argparse
import os
import signal
import uuid
import warnings
from typing import Any, Mapping

from .common import _err

#: Seconds the command waits, at the end, for its log rows to be written.
FLUSH_TIMEOUT = 3.0

NOTHING_TO_CONTINUE = "llmrelay: error: nothing to continue: "

#: How many recent rows `--cid` scans for a conversation id.
CID_SCAN = 5000


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def conversation_id_of(row: Mapping[str, Any]) -> str:
    """The conversation a logged row belongs to (rows logged before conversation ids: the
    first call of the conversation names it)."""
    return str(row.get("conversation_id") or row.get("correlation_id") or new_conversation_id())


# -- where the logs are ----------------------------------------------------------------------


def read_target(args: argparse.Namespace) -> str | None:
    """The store named on the command line; None: `LLMRELAY_LOG`, else the default path."""
    return args.db or (args.log if isinstance(args.log, str) else None)


def log_target(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str | None:
    """Where this chat is logged (a SQLite path or a DSN), or None for not at all."""
    from ..logs.paths import _OFF, _ON, ENV_VAR, default_path

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


def flush_log(hook: Any, response: Any, verbose: bool, conversation_id: str | None = None) -> None:
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
        if conversation_id:
            _err(f"conversation {conversation_id} (continue it: `llmrelay chat --cid {conversation_id}`)")


# -- continuing a conversation ---------------------------------------------------------------


class NothingToContinue(Exception):
    pass


def last_conversation(target: str | None, cid: str | None = None) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """(messages, model, row) of the most recent logged request (of conversation `cid` if given):
    its request messages, then its answer."""
    from ..logs import open_store

    store = open_store(target)
    where = store.describe()
    try:
        store.open(create=False)
        row = _latest_row(store, cid)
    except FileNotFoundError:
        raise NothingToContinue(f"no conversation is logged at {where} (chat logs its calls unless --no-log "
                                "or LLMRELAY_LOG=0)") from None
    except NothingToContinue:
        raise
    except Exception as exc:
        raise NothingToContinue(f"cannot read the logs at {where}: {type(exc).__name__}: {exc}") from None
    finally:
        store.close()
    if row is None and cid is None:
        raise NothingToContinue(f"the log at {where} holds no conversation yet")
    if row is None:
        raise NothingToContinue(f"no conversation {cid!r} in the log at {where} (`llmrelay logs list` shows "
                                "the logged calls)")
    return conversation_from_row(row), model_of(row), row


def _latest_row(store: Any, cid: str | None) -> dict[str, Any] | None:
    if cid is None:
        latest: list[dict[str, Any]] = store.recent(1)
        return latest[0] if latest else None
    cid = cid.strip()
    if not cid:
        return None
    from ..logs.query import Filters

    rows: list[dict[str, Any]] = store.recent(1, Filters(conversation=cid))
    if rows:
        return rows[0]
    for row in store.recent(CID_SCAN):  # a prefix of an id, newest first
        if str(row.get("conversation_id") or "").startswith(cid):
            found: dict[str, Any] = row
            return found
    rows = store.get(cid)  # a call's correlation id (or a prefix), or a row id
    return max(rows, key=lambda r: int(r["id"])) if rows else None


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


def _ignore_sigint() -> Any:
    """During cleanup a second Ctrl-C must not leave a traceback or a half-closed stream."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return None


def _restore_sigint(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old)
