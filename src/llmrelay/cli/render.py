"""Terminal output for the `llmrelay` command: live views, stats lines, tables, JSON events.

rich is optional and imported only here, only when a terminal wants it. Without
rich (or without a TTY) everything falls back to plain incremental text, which
is also what CI logs and pipes get.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Iterable, Sequence, TextIO

from ..providers import Provider, env_names

# -- plain data ------------------------------------------------------------------


def to_plain(obj: Any) -> Any:
    """A JSON-ready copy of an event (dataclasses become dicts, recursively)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        kind = getattr(obj, "type", None)
        if kind is not None:
            out["type"] = kind
        for f in dataclasses.fields(obj):
            if f.name != "type":
                out[f.name] = to_plain(getattr(obj, f.name))
        return out
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def key_env_vars(p: Provider) -> tuple[str, ...]:
    """The env vars `resolve_api_key` reads, in order."""
    return p.key_env or env_names(p, ("_API_KEY",))


def base_url_env_vars(p: Provider) -> tuple[str, ...]:
    """The env vars `resolve_base_url` reads, in order (duplicates removed)."""
    seen: list[str] = []
    for name in p.base_url_env + env_names(p, ("_BASE_URL", "_API_BASE")):
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def _cloud_url(cloud: str) -> str:
    from ..cloud import URL_FORMS  # the URL form of a cloud provider (no SDK is imported)

    return URL_FORMS[cloud].replace("`", "")


def provider_rows(providers: Iterable[Provider]) -> list[list[str]]:
    rows = []
    for p in providers:
        keys = ", ".join(key_env_vars(p))
        if not p.requires_key:
            keys += " (optional)"
        base = p.base_url or (_cloud_url(p.cloud) if p.cloud else "(none: pass --base-url)")
        rows.append([p.name, p.protocol, base, keys, ", ".join(base_url_env_vars(p))])
    return rows


PROVIDER_HEADERS = ["provider", "protocol", "default base URL", "API key env", "base URL env"]

# -- numbers -----------------------------------------------------------------------


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def token_counts(response: Any, reported: Any = None) -> tuple[str, str]:
    """(in, out) as text; an estimated count is marked with "~".

    `reported` is the usage the provider actually sent (`stream.usage`); a count
    missing there was estimated. Without it, `usage.estimated` marks both.
    """
    u = response.usage

    def one(name: str) -> str:
        value = getattr(u, name)
        if value is None:
            return "?"
        if reported is not None:
            guessed = getattr(reported, name) is None
        else:
            guessed = u.estimated
        return f"~{value}" if guessed else str(value)

    return one("input_tokens"), one("output_tokens")


def fmt_usd(total: float) -> str:
    """`$0.000335`, `$0.0213`, `$0`: enough digits for one cheap call."""
    if total == 0:
        return "$0"
    return f"${total:.6f}" if abs(total) < 0.01 else f"${total:.4f}"


_SOURCES = {"provider": "reported by the provider", "override": "your prices", "mixed": "mixed sources"}


def cost_text(response: Any, *, verbose: bool = False) -> str:
    """`cost $0.000335` (`~$` when the tokens were estimated) or `cost n/a`; `verbose` adds
    where the price came from, or why there is none. Never raises."""
    try:
        cost = response.cost
    except Exception as exc:  # a pricing bug must not hide the answer
        return f"cost n/a ({type(exc).__name__}: {exc})" if verbose else "cost n/a"
    if cost.total is None:
        return f"cost n/a ({cost.reason})" if verbose and cost.reason else "cost n/a"
    text = "cost " + ("~" if cost.estimated else "") + fmt_usd(cost.total)
    if verbose:
        why = cost.reason or cost.priced_as or _SOURCES.get(cost.source or "", cost.source)
        if why:
            text += f" ({why})"
    return text


def cost_dict(response: Any) -> dict[str, Any]:
    """The cost for JSON output: `usd` (None when unknown), `reason`, `source`, `estimated`."""
    try:
        cost = response.cost
    except Exception as exc:
        return {"usd": None, "reason": f"{type(exc).__name__}: {exc}", "source": None, "estimated": False}
    return {"usd": cost.total, "reason": cost.reason, "source": cost.source, "estimated": cost.estimated,
            "priced_as": cost.priced_as}


def stats_line(response: Any, reported: Any = None, *, note: str | None = None, cost: bool = True,
               verbose: bool = False) -> str:
    """`TTFT 310 ms · 14 in / 30 out tokens · 233 tok/s · total 1.20 s · cost $0.000335`."""
    t = response.timings
    tin, tout = token_counts(response, reported)
    parts = [f"TTFT {fmt_seconds(t.time_to_first_token)}", f"{tin} in / {tout} out tokens"]
    if t.output_tokens_per_second:
        parts.append(f"{t.output_tokens_per_second:.0f} tok/s")
    parts.append(f"total {fmt_seconds(t.total)}")
    if cost:
        parts.append(cost_text(response, verbose=verbose))
    line = " · ".join(parts)
    if note:
        line += f" {note}"
    return line


# -- consoles ----------------------------------------------------------------------


def rich_console(stream: TextIO, *, force_plain: bool = False) -> Any:
    """A rich Console on a TTY when rich is installed, else None (plain text)."""
    if force_plain or not _isatty(stream):
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False, soft_wrap=False)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Out:
    """One output stream, rich when possible: lines, rules, styled text, tables."""

    def __init__(self, stream: TextIO | None = None, *, plain: bool = False):
        self.stream = stream or sys.stdout
        self.console = rich_console(self.stream, force_plain=plain)

    @property
    def rich(self) -> bool:
        return self.console is not None

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style=style or ""))
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def write(self, text: str, style: str | None = None) -> None:
        """Text without a newline, flushed at once (incremental output)."""
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style=style or ""), end="")
        else:
            self.stream.write(text)
            self.stream.flush()

    def rule(self, title: str) -> None:
        if self.console is not None:
            self.console.rule(f"[bold]{_escape(title)}[/bold]", align="left")
        else:
            self.stream.write(f"\n== {title} " + "=" * max(3, 72 - len(title)) + "\n")
            self.stream.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
        if self.console is not None:
            from rich.table import Table

            t = Table(title=title, title_justify="left", header_style="bold")
            for h in headers:
                t.add_column(h, overflow="fold")
            for r in rows:
                t.add_row(*[_escape(str(c)) for c in r])
            self.console.print(t)
            return
        self.stream.write(plain_table(headers, rows, title))
        self.stream.flush()

    def view(self, *, show_reasoning: bool = True, hidden_hint: str = "") -> StreamView:
        if self.console is not None:
            return RichView(self.console, show_reasoning=show_reasoning, hidden_hint=hidden_hint)
        return PlainView(self.stream, show_reasoning=show_reasoning)


def _escape(text: str) -> str:
    try:
        from rich.markup import escape
    except ImportError:  # pragma: no cover
        return text
    return escape(text)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> str:
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    lines = [title] if title else []
    lines.append(fmt(cells[0]))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in cells[1:])
    return "\n".join(lines) + "\n"


# -- live views of one stream ---------------------------------------------------------


class StreamView:
    """Receives a stream's pieces as they arrive; `close()` leaves the final render."""

    def reasoning(self, text: str) -> None: ...
    def text(self, text: str) -> None: ...
    def refusal(self, text: str) -> None: ...
    def tool_call(self, name: str, arguments: str) -> None: ...
    def tool_result(self, name: str, content: str, error: bool) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> StreamView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PlainView(StreamView):
    """Incremental plain text; reasoning (if shown) is wrapped in <think>…</think>."""

    def __init__(self, stream: TextIO, *, show_reasoning: bool):
        self.stream = stream
        self.show_reasoning = show_reasoning
        self.in_reasoning = False
        self.wrote = False
        self.last = ""

    def _put(self, s: str) -> None:
        if s:
            self.stream.write(s)
            self.stream.flush()
            self.wrote = True
            self.last = s[-1]

    def _end_reasoning(self) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self._put(("" if self.last == "\n" else "\n") + "</think>\n\n")

    def reasoning(self, text: str) -> None:
        if not self.show_reasoning or not text:
            return
        if not self.in_reasoning:
            self.in_reasoning = True
            self._put("<think>\n")
        self._put(text)

    def text(self, text: str) -> None:
        self._end_reasoning()
        self._put(text)

    def refusal(self, text: str) -> None:
        self._end_reasoning()
        self._put(text)

    def tool_call(self, name: str, arguments: str) -> None:
        self._end_reasoning()
        self._put(("" if self.last in ("", "\n") else "\n") + f"-> tool call {name}({arguments})\n")

    def tool_result(self, name: str, content: str, error: bool) -> None:
        self._put(("" if self.last in ("", "\n") else "\n") + f"<- {name} {'failed' if error else 'returned'} {content}\n")

    def close(self) -> None:
        self._end_reasoning()
        if self.wrote and self.last != "\n":
            self._put("\n")


class _Body:
    """A renderable built from the pieces so far, at render time (the refresh thread's pace)."""

    def __init__(self, show_reasoning: bool, hidden_hint: str):
        self.show_reasoning = show_reasoning
        self.hidden_hint = hidden_hint
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: list[str] = []

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.markdown import Markdown
        from rich.text import Text

        reasoning = "".join(self.reasoning)
        text = "".join(self.text)
        if reasoning and self.show_reasoning:
            yield Text(reasoning.strip("\n"), style="dim italic")
            if text or self.refusal or self.tools:
                yield Text("")
        elif reasoning and not text:
            yield Text(f"thinking… {len(reasoning)} chars{self.hidden_hint}", style="dim")
        if text:
            yield Markdown(text)
        if self.refusal:
            yield Text("refusal: " + "".join(self.refusal), style="red")
        for t in self.tools:
            yield Text(t, style="cyan")


class _NoEcho:
    """Turn off terminal echo while a live display redraws.

    Keys typed (and the `^C` a Ctrl-C echoes) would land inside the redrawn area
    and leave a stray copy of it behind. The saved settings are restored on close.
    """

    def __init__(self, stream: Any):
        self.fd: int | None = None
        self.saved: Any = None
        try:
            import termios

            fd = stream.fileno()
            if not os.isatty(fd):
                return
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
            self.fd, self.saved = fd, saved
        except (ImportError, AttributeError, ValueError, OSError):
            pass

    def restore(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            import termios

            try:
                termios.tcsetattr(fd, termios.TCSANOW, self.saved)
            except OSError:
                pass


class RichView(StreamView):
    """rich Live + Markdown, re-rendered ~12 times a second while pieces arrive."""

    def __init__(self, console: Any, *, show_reasoning: bool, hidden_hint: str = ""):
        from rich.live import Live

        self.body = _Body(show_reasoning, hidden_hint)
        self.live = Live(self.body, console=console, refresh_per_second=12, vertical_overflow="ellipsis", transient=False)
        self.no_echo = _NoEcho(sys.stdin)
        try:
            self.live.start()
        except BaseException:
            self.no_echo.restore()
            raise

    def reasoning(self, text: str) -> None:
        self.body.reasoning.append(text)

    def text(self, text: str) -> None:
        self.body.text.append(text)

    def refusal(self, text: str) -> None:
        self.body.refusal.append(text)

    def tool_call(self, name: str, arguments: str) -> None:
        self.body.tools.append(f"→ tool call {name}({arguments})")

    def tool_result(self, name: str, content: str, error: bool) -> None:
        self.body.tools.append(f"← {name} {'failed' if error else 'returned'} {content}")

    def close(self) -> None:
        try:
            self.live.stop()
        finally:
            self.no_echo.restore()


def feed_view(view: StreamView, event: Any) -> None:
    """Route one typed event (choice 0) to a view."""
    from .. import events as ev

    t = type(event)
    if getattr(event, "choice", 0) != 0:
        return
    if t is ev.TextDelta:
        view.text(event.text)
    elif t is ev.ReasoningDelta:
        if event.text:
            view.reasoning(event.text)
    elif t is ev.RefusalDelta:
        view.refusal(event.text)
    elif t is ev.ToolResult:
        view.tool_result(event.name, event.content, event.error is not None)
    elif t is ev.ToolCallEnd:
        args = json.dumps(event.arguments, ensure_ascii=False) if event.arguments is not None else event.raw_arguments
        view.tool_call(event.name, args)
