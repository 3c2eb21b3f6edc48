"""`llmrelay logs`: read the request logs back.

    llmrelay logs list [-n 20]              recent requests, newest first
    llmrelay logs show ID                   one row (numeric id) or every row of a call (correlation id or prefix)
    llmrelay logs search TEXT [-n 20]       full-text search over request and response text
    llmrelay logs totals [--by model|day]   calls, requests, tokens, cost, p50/p95 time to first token

Every action takes `--db PATH` (SQLite) or `--dsn postgresql://…` (with
`--schema`); by default `LLMRELAY_LOG`, else the default SQLite path. `list`,
`search` and `totals` take filters: `--model` (served or requested; a trailing
`*` matches a prefix), `--provider`, `--status`, `--conversation` and
`--since` / `--until` (`30m`, `2h`, `7d`, `1w` ago, or an ISO-8601 date or
time, UTC unless it says otherwise).

`--json` prints JSON lines: one JSON object per row (per group for `totals`),
one row per line, newest first, with every column of the `turns` table (JSON
columns decoded; times as epoch floats and, for rows written since m004,
`started_at_iso` / `ended_at_iso`). `jq -s .` turns it into an array.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

EXIT_OK, EXIT_ERROR = 0, 1


def register(sub: Any) -> argparse.ArgumentParser:
    """Add the `logs` command to the `llmrelay` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="PATH", help="SQLite log file (default: $LLMRELAY_LOG or the user data dir)")
    where.add_argument("--dsn", metavar="DSN", help="PostgreSQL DSN (postgresql://…)")
    common.add_argument("--schema", default="llmrelay", help="PostgreSQL schema (default: llmrelay)")
    common.add_argument("--json", action="store_true",
                        help="JSON lines: one JSON object per row (per group for totals), one per line")
    filters = argparse.ArgumentParser(add_help=False)
    group = filters.add_argument_group("filters")
    group.add_argument("--model", help="served or requested model (a trailing * matches a prefix)")
    group.add_argument("--provider", help="provider name, e.g. openai")
    group.add_argument("--status", choices=("ok", "truncated", "error", "aborted"), help="row status")
    group.add_argument("--conversation", metavar="ID", help="a conversation id (conversation_id=, chat -c)")
    group.add_argument("--since", metavar="WHEN", help="started at or after: 30m, 2h, 7d, 1w ago, or an ISO date/time")
    group.add_argument("--until", metavar="WHEN", help="started before: same forms as --since")

    logs = sub.add_parser("logs", help="read the request logs (list, show, search, totals)",
                          description="Read the request logs written with Client(log=...) or LLMRELAY_LOG.")
    actions = logs.add_subparsers(dest="logs_action", metavar="{list,show,search,totals}")
    p = actions.add_parser("list", parents=[common, filters], help="recent requests, newest first")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many rows (default 20)")
    p = actions.add_parser("show", parents=[common], help="one row, or every row of a call")
    p.add_argument("id", help="a row id, or a correlation id (or a unique prefix of one)")
    p = actions.add_parser("search", parents=[common, filters], help="full-text search over request and response text")
    p.add_argument("text", help="words that must all appear")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many rows (default 20)")
    p = actions.add_parser("totals", parents=[common, filters], help="calls, tokens, cost and TTFT percentiles")
    p.add_argument("--by", choices=("model", "day"), default="model", help="group by (default: model)")
    logs.set_defaults(logs_parser=logs)
    return logs


def run(args: argparse.Namespace) -> int:
    from ..logs import open_store

    action = getattr(args, "logs_action", None)
    if action is None:
        args.logs_parser.print_help()
        return 2
    try:
        filters = _filters(args)
    except ValueError as exc:
        sys.stderr.write(f"llmrelay: error: {exc}\n")
        return 2
    store = open_store(args.dsn or args.db, schema=args.schema)
    try:
        store.open(create=False)
    except Exception as exc:
        sys.stderr.write(f"llmrelay: cannot read the logs at {store.describe()}: {exc}\n"
                         "(logging is enabled with Client(log=True) or LLMRELAY_LOG=1)\n")
        return EXIT_ERROR
    try:
        if action == "list":
            rows = store.recent(args.limit, filters)
            _emit(args, rows, _list_table)
        elif action == "show":
            rows = store.get(args.id)
            if not rows:
                sys.stderr.write(f"llmrelay: no log row or call {args.id!r}\n")
                return EXIT_ERROR
            if args.json:
                _json_lines(rows)
            else:
                sys.stdout.write("\n".join(format_row(r) for r in rows))
        elif action == "search":
            rows = store.search(args.text, args.limit, filters)
            _emit(args, rows, _list_table)
        elif action == "totals":
            rows = store.totals(args.by, filters)
            _emit(args, rows, lambda r: _totals_table(r, args.by))
    finally:
        store.close()
    return EXIT_OK


def _filters(args: argparse.Namespace) -> Any:
    from ..logs.query import Filters, parse_time

    return Filters(
        model=getattr(args, "model", None), provider=getattr(args, "provider", None),
        status=getattr(args, "status", None), conversation=getattr(args, "conversation", None),
        since=parse_time(args.since) if getattr(args, "since", None) else None,
        until=parse_time(args.until) if getattr(args, "until", None) else None,
    )


# -- output ----------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], table: Any) -> None:
    if args.json:
        _json_lines(rows)
    else:
        sys.stdout.write(table(rows))


def _json_lines(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        sys.stdout.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def num(value: Any) -> str:
    return "-" if value is None else str(value)


def preview(text: str | None, width: int = 48) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)]) + "\n"


def _list_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    cells = [
        [str(r["id"]), when(r["started_at"]), (r["correlation_id"] or "")[:12], num(r["turn"]),
         f"{r['provider']}:{r['model']}", r["status"], num(r["input_tokens"]),
         num(r["output_tokens"]) + ("~" if r["usage_estimated"] else ""), money(r["cost_usd"]), ms(r["ttft"]),
         preview(r["text"] or r["error"])]
        for r in rows
    ]
    return table(["ID", "TIME", "CALL", "TURN", "MODEL", "STATUS", "IN", "OUT", "COST", "TTFT", "TEXT"],
                 cells, right=(0, 3, 6, 7, 8, 9))


def _totals_table(rows: list[dict[str, Any]], by: str) -> str:
    if not rows:
        return "(no rows)\n"
    cells = [
        [str(r["key"]), num(r["calls"]), num(r["requests"]), num(r["failed"]), num(r["input_tokens"]),
         num(r["output_tokens"]), money(r["cost_usd"]) + ("+?" if r["unpriced"] and r["cost_usd"] is not None else ""),
         ms(r["ttft_p50"]), ms(r["ttft_p95"])]
        for r in rows
    ]
    return table([by.upper(), "CALLS", "REQUESTS", "FAILED", "TOKENS IN", "TOKENS OUT", "COST", "TTFT P50", "TTFT P95"],
                  cells, right=(1, 2, 3, 4, 5, 6, 7, 8))


def format_row(r: dict[str, Any]) -> str:
    """Every field of a row, readable: messages and JSON columns expanded."""
    lines = [f"── row {r['id']} · call {r['correlation_id']} · turn {r['turn']} " + "─" * 20]
    simple = ("started_at", "ended_at", "conversation_id", "provider", "base_url", "requested", "requested_model",
              "model", "status",
              "finish_reason", "error", "request_id", "response_id", "stream", "input_tokens", "output_tokens",
              "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost_usd",
              "cost_reason", "ttft", "time_to_first_text", "duration")
    for name in simple:
        value = r.get(name)
        if value is None:
            continue
        if name in ("started_at", "ended_at"):
            value = f"{when(value)} ({value:.3f})"
        elif name in ("ttft", "time_to_first_text", "duration"):
            value = ms(value)
        elif name == "cost_usd":
            value = money(value)
        lines.append(f"{name:>20}: {value}")
    for name in ("params", "tags"):
        if r.get(name):
            lines.append(f"{name:>20}: {json.dumps(r[name], ensure_ascii=False)}")
    lines.append("request messages:")
    for m in r.get("request_messages") or []:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        extra = f" tool_calls={json.dumps(m['tool_calls'], ensure_ascii=False)}" if m.get("tool_calls") else ""
        lines.append(f"  [{m.get('role')}] {text}{extra}")
    for name in ("reasoning", "text", "refusal"):
        if r.get(name):
            lines.append(f"{name}:\n  " + r[name].replace("\n", "\n  "))
    for name in ("tool_calls", "tool_results", "attempts"):
        if r.get(name):
            lines.append(f"{name}:")
            lines.extend("  " + json.dumps(item, ensure_ascii=False) for item in r[name])
    return "\n".join(lines) + "\n"
