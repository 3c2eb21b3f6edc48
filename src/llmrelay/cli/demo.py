"""`llmrelay demo`: real recorded provider streams, replayed offline with real pacing.

A `ReplayServer` on 127.0.0.1 sends the bundled recordings (byte for byte what
the providers sent) one event at a time; a normal `Client` streams them over
real HTTP. No key, no network. The demo's client logs every request to a
temporary SQLite file (`llmrelay.logs`); the last section reads it back.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections import Counter
from typing import Any, Callable

from .. import events as ev
from .render import Out, cost_text, fmt_seconds, fmt_usd, feed_view, stats_line, token_counts
from ..errors import APIError, ProviderStreamError, StreamInterruptedError
from ..providers import PROVIDERS
from ..testing import ReplayServer, Reply, client_for, provider_for, read_recording, request_for
from ..testing.recordings import content_type_for

#: (recording, model) for "one interface, four protocols".
PROTOCOL_TOUR = (
    ("openai_chat/text_usage_chunk.sse", "gpt-4o"),
    ("anthropic/text_basic.sse", "claude-sonnet-4-5"),
    ("gemini/text_sse.sse", "gemini-2.0-flash-exp"),
    ("ollama/chat_text_done_stop.ndjson", "gemma3:1b"),
)
REASONING = ("deepseek/reasoning_content_stream.sse", "deepseek-reasoner")
TOOLS = ("openai_chat/parallel_tool_calls.sse", "gpt-4o")
TOOL_LOOP = ("openai_chat/tool_call_then_usage.sse", "openai_chat/text_after_tool_result.sse")
INBAND_ERROR = ("groq/error_event_tool_use_failed.sse", "openai/gpt-oss-120b")
CUT = ("mistral/magistral_thinking_content_parts.sse", "magistral-medium-latest")
CUT_AFTER = b"crosswalk if one"

#: Pacing: one provider event per piece, like the real APIs; a long recording is
#: sped up so each stream takes at most ~2 s.
MAX_DELAY, MIN_DELAY, STREAM_BUDGET, FIRST_BYTE = 0.12, 0.012, 1.6, 0.25


class Skip(Exception):
    """A section that cannot run in this build (its protocol module is missing)."""


def recorded_messages(request: Any) -> list[dict[str, str]] | None:
    """The text turns of a recorded request body (OpenAI/Anthropic/Ollama `messages`, Gemini `contents`)."""
    if not isinstance(request, dict):
        return None

    def text_of(content: Any) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, dict):
            return text_of(content.get("parts"))
        return ""

    out: list[dict[str, str]] = []
    system = request.get("system") or request.get("systemInstruction")
    if system:
        out.append({"role": "system", "content": text_of(system)})
    for m in request.get("messages") or ():
        if m.get("role") in ("system", "user", "assistant") and not m.get("tool_calls"):
            text = text_of(m.get("content"))
            if text:
                out.append({"role": m["role"], "content": text})
    for c in request.get("contents") or ():
        role = "assistant" if c.get("role") == "model" else "user"
        out.append({"role": role, "content": text_of(c)})
    return out or None


def cut_mid_event(body: bytes, after: bytes) -> bytes:
    """The body cut in the middle of the event that follows `after` (a connection drop mid-answer)."""
    at = body.find(after)
    if at < 0:
        at = int(len(body) * 0.75)
    nxt = body.find(b"\n\n", at)
    if nxt < 0:
        return body[: int(len(body) * 0.75)]
    return body[: nxt + 2 + 40]


class Demo:
    def __init__(self, out: Out, server: ReplayServer, client: Any, fast: bool,
                 log_path: str = "", log_hook: Any = None):
        self.out = out
        self.server = server
        self.client = client
        self.fast = fast
        self.log_path = log_path
        self.log_hook = log_hook
        self.calls: list[list[str]] = []
        self.failures: list[str] = []

    # -- plumbing -------------------------------------------------------------------------
    def reply(self, name: str, body: bytes | None = None) -> Reply:
        body = read_recording(name) if body is None else body
        if self.fast:
            return Reply(body, headers={"content-type": content_type_for(name)}, chunking="events")
        n = len(Reply(body, chunking="events").pieces())
        delay = min(MAX_DELAY, max(MIN_DELAY, STREAM_BUDGET / max(1, n)))
        return Reply(body, headers={"content-type": content_type_for(name)}, chunking="events",
                     delay=delay, first_byte_delay=FIRST_BYTE)

    def check_protocol(self, provider: str) -> None:
        protocol = PROVIDERS[provider].protocol
        try:
            found = importlib.util.find_spec(f"llmrelay.protocols.{protocol}") is not None
        except ImportError:
            found = False
        if not found:
            raise Skip(f"the {protocol} protocol module is not in this build yet")
        try:
            importlib.import_module(f"llmrelay.protocols.{protocol}")
        except ImportError as exc:
            raise Skip(f"the {protocol} protocol module does not import yet ({exc})") from None

    def header(self, name: str, model: str) -> tuple[str, list[dict[str, str]]]:
        provider = provider_for(name)
        self.check_protocol(provider)
        self.out.rule(f"{provider} · {model}")
        messages = recorded_messages(request_for(name))
        detail = f"recording {name} · {PROVIDERS[provider].protocol} protocol"
        if messages is None:
            self.out.line(detail + " · the prompt was not kept in this recording", style="dim")
            messages = [{"role": "user", "content": "(replayed recording: prompt not kept)"}]
        else:
            self.out.line(detail, style="dim")
            for m in messages:
                self.out.line(f"{m['role']}> {m['content']}", style="bold" if m["role"] == "user" else "dim")
        return f"{provider}:{model}", messages

    def call(self, model: Any, messages: Any, reply: Reply | list[Reply],
             on_event: Callable[[Any], None] | None = None, **options: Any) -> tuple[Any, Any, APIError | None]:
        """Stream one call (live view unless `on_event` handles events); record it for the summary."""
        self.server.enqueue(*(reply if isinstance(reply, list) else [reply]))
        stream = self.client.stream(model, messages, **options)
        error: APIError | None = None
        view = self.out.view(show_reasoning=True) if on_event is None else None
        try:
            for event in stream:
                if view is not None:
                    feed_view(view, event)
                else:
                    on_event(event)  # type: ignore[misc]
        except APIError as exc:
            error = exc
        finally:
            if view is not None:
                view.close()
            stream.close()
        response = stream.response
        tin, tout = token_counts(response, stream.usage)
        status = response.status if error is None else type(error).__name__
        self.calls.append([
            response.provider or "", response.model or "", status, tin, tout,
            fmt_seconds(response.timings.time_to_first_token), fmt_seconds(response.timings.total),
            cost_text(response).removeprefix("cost "),
        ])
        return stream, response, error

    def stats(self, stream: Any, response: Any, note: str | None = None) -> None:
        self.out.line(f"served by {response.model} · " + stats_line(response, stream.usage, note=note), style="green")

    def section(self, title: str, body: Callable[[], None]) -> None:
        self.out.line()
        self.out.line(title, style="bold magenta")
        try:
            body()
        except Skip as exc:
            self.out.line(f"(skipped: {exc})", style="yellow")
        except Exception as exc:  # a real failure: report it and fail the demo
            self.failures.append(f"{title}: {type(exc).__name__}: {exc}")
            self.out.line(f"FAILED: {type(exc).__name__}: {exc}", style="bold red")

    def one(self, name: str, model: str) -> None:
        """A section step with its own skip/failure handling (the tour keeps going)."""
        try:
            model_str, messages = self.header(name, model)
            stream, response, error = self.call(model_str, messages, self.reply(name))
            if error is not None:
                raise error
            self.stats(stream, response)
        except Skip as exc:
            self.out.line(f"{provider_for(name)}: skipped ({exc})", style="yellow")

    # -- sections ---------------------------------------------------------------------------
    def tour(self) -> None:
        for name, model in PROTOCOL_TOUR:
            try:
                self.one(name, model)
            except Exception as exc:
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                self.out.line(f"FAILED: {type(exc).__name__}: {exc}", style="bold red")

    def reasoning(self) -> None:
        name, model = REASONING
        model_str, messages = self.header(name, model)
        self.out.line("reasoning streams dimmed, then the answer:", style="dim")
        stream, response, error = self.call(model_str, messages, self.reply(name))
        if error is not None:
            raise error
        self.stats(stream, response)
        rt = response.usage.reasoning_tokens
        self.out.line(
            f"response.reasoning: {len(response.reasoning)} chars"
            + (f" ({rt} reasoning tokens, counted in output)" if rt is not None else "")
            + f" · response.text: {len(response.text)} chars — never mixed",
        )

    def tools(self) -> None:
        name, model = TOOLS
        model_str, messages = self.header(name, model)
        state = {"delta_open": False}
        out = self.out

        def end_deltas() -> None:
            if state["delta_open"]:
                out.write("\n")
                state["delta_open"] = False

        def on_event(e: Any) -> None:
            t = type(e)
            if t is ev.ToolCallStart:
                end_deltas()
                out.write("ToolCallStart ", style="cyan")
                out.write(f" #{e.index} {e.name} (id {e.id})\n")
            elif t is ev.ToolCallDelta:
                if not state["delta_open"]:
                    out.write("ToolCallDelta ", style="cyan")
                    out.write(f" #{e.index} ")
                    state["delta_open"] = True
                else:
                    out.write("|", style="dim")
                out.write(e.arguments, style="yellow")
            elif t is ev.ToolCallEnd:
                end_deltas()
                out.write("ToolCallEnd   ", style="cyan")
                args = json.dumps(e.arguments) if e.arguments is not None else f"unparsed: {e.raw_arguments!r} ({e.error})"
                out.write(f" #{e.index} {e.name} -> arguments {args}\n", style="bold")
            elif t is ev.Finish:
                end_deltas()
                out.write("Finish        ", style="cyan")
                out.write(f" reason={e.reason}\n")

        stream, response, error = self.call(model_str, messages, self.reply(name), on_event=on_event)
        end_deltas()
        if error is not None:
            raise error
        self.stats(stream, response)
        calls = ", ".join(f"{c.name}({c.arguments_json})" for c in response.tool_calls)
        self.out.line(f"response.tool_calls: {calls}")
        self.out.line(
            "Fragments (split at | above, as they arrived) are joined per index and parsed once complete.", style="dim",
        )

    def tool_loop(self) -> None:
        """A real recorded pair: the model asks for multiply(), llmrelay runs it, the model answers."""
        first, second = TOOL_LOOP
        model_str, messages = self.header(first, "gpt-4o-mini")

        def multiply(a: int, b: int) -> int:
            """Multiply two numbers."""
            return a * b

        out = self.out
        view = out.view(show_reasoning=True)

        def on_event(e: Any) -> None:
            t = type(e)
            if t is ev.ToolCallEnd:
                out.write(f"→ the model calls {e.name}({json.dumps(e.arguments)})\n", style="cyan")
            elif t is ev.ToolResult:
                out.write(f"← llmrelay ran it: {e.content} ({e.duration * 1e6:.0f} µs); the next turn streams on:\n",
                          style="cyan")
            else:
                feed_view(view, e)

        try:
            stream, response, error = self.call(model_str, messages, [self.reply(first), self.reply(second)],
                                                on_event=on_event, tools=[multiply])
        finally:
            view.close()
        if error is not None:
            raise error
        self.stats(stream, response)
        self.out.line(f"one stream, {len(response.turns or [])} requests; usage summed over both; "
                      f"transcript: {' → '.join(m.role for m in response.messages or [])}", style="dim")

    def fallback(self) -> None:
        """The first model's connection drops mid-answer; the next model continues the same text."""
        name, model = CUT
        body = cut_mid_event(read_recording(name), CUT_AFTER)
        _, messages = self.header(name, model)
        target = "anthropic/text_basic.sse"
        self.out.line("(mistral drops the connection mid-answer; anthropic continues it: fallback_mode='prefill'. "
                      "The continuation is another real recording, so its words do not follow on.)", style="dim")
        stream, response, error = self.call(
            [f"mistral:{model}", "anthropic:claude-sonnet-4-5"], messages,
            [self.reply(name, body), self.reply(target)], fallback_mode="prefill",
        )
        if error is not None:
            raise error
        self.stats(stream, response)
        for a in response.attempts or []:
            why = f"{type(a.error).__name__}" if a.error is not None else "answered"
            self.out.line(f"attempt {a.model}: {why}", style="dim")
        sent = self.server.requests[-1].json
        self.out.line(f"resumed={response.resumed}: the second request ended with the partial answer as an assistant "
                      f"prefill ({len(sent['messages'][-1]['content'][0]['text'])} chars), so no text was repeated",
                      style="dim")

    def errors(self) -> None:
        # (a) an error event inside an HTTP 200 stream, after partial output
        name, model = INBAND_ERROR
        try:
            model_str, messages = self.header(name, model)
        except Skip as exc:
            self.out.line(f"skipped ({exc})", style="yellow")
        else:
            stream, response, error = self.call(model_str, messages, self.reply(name))
            if not isinstance(error, ProviderStreamError):
                raise AssertionError(f"expected ProviderStreamError, got {error!r}")
            self.out.line(f"raised {type(error).__name__} (HTTP status was 200): code={error.code}, "
                          f"status in payload={error.status_code}", style="bold red")
            self.out.line(f"message: {_shorten(error.message, 150)}", style="red")
            partial = error.partial
            self.out.line(f"kept in error.partial: {len(partial.reasoning)} chars of reasoning, "
                          f"{len(partial.text)} chars of text, status {partial.status!r}")
            self.stats(stream, response, note="(partial)")

        # (b) the connection drops in the middle of the answer
        name, model = CUT
        model_str, messages = self.header(name, model)
        body = cut_mid_event(read_recording(name), CUT_AFTER)
        self.out.line(f"(the server drops the connection after {len(body)} of {len(read_recording(name))} bytes, mid-event)",
                      style="dim")
        stream, response, error = self.call(model_str, messages, self.reply(name, body))
        if not isinstance(error, StreamInterruptedError):
            raise AssertionError(f"expected StreamInterruptedError, got {error!r}")
        partial = error.partial
        self.out.line(f"raised {type(error).__name__}: {error.message}", style="bold red")
        self.out.line(f"kept in error.partial: text {_shorten(partial.text, 80)!r} ({len(partial.text)} chars), "
                      f"{len(partial.reasoning)} chars of reasoning")
        self.out.line(f"usage never arrived, so it is estimated from the text (usage.estimated={partial.usage.estimated}, "
                      "marked ~ below)")
        self.stats(stream, response, note="(partial)")

    def summary(self) -> None:
        self.out.line()
        self.out.table(["provider", "model", "status", "in", "out", "TTFT", "total", "cost"], self.calls,
                       title="Every call in this demo (~ = estimated tokens; cost: response.cost.total, USD)")

    def logs(self) -> None:
        """Every request above is a row in the log store: read it back like `llmrelay logs totals`."""
        if self.log_hook is None:
            raise Skip("logging could not start in this Python (sqlite3?)")
        from ..logs import default_path, open_store
        from .logs import money, ms, num
        from ..logs.sqlite import percentile

        out, hook = self.out, self.log_hook
        if not hook.flush(10) or hook.stats.lost:
            raise AssertionError(f"log rows not written: {hook.stats.last_error or 'the writer timed out'}")
        with open_store(self.log_path) as store:
            rows, totals = store.rows(), store.totals("model")
        out.line(f"The client above was client_for(server, log={self.log_path!r}): one row per HTTP request,\n"
                 "written by a background thread, never on the stream's path. Read back from SQLite:", style="dim")
        calls = {r["correlation_id"] for r in rows}
        statuses = Counter(r["status"] for r in rows)
        out.line(f"{len(rows)} rows for {len(calls)} calls (tool rounds and fallback attempts are rows of their call) · "
                 "rows per status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        priced = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
        ttfts = sorted(r["ttft"] for r in rows if r["ttft"] is not None)
        out.line(f"tokens {sum(r['input_tokens'] or 0 for r in rows)} in / {sum(r['output_tokens'] or 0 for r in rows)} "
                 f"out ({sum(1 for r in rows if r['usage_estimated'])} rows estimated) · cost {fmt_usd(sum(priced))} "
                 f"({len(rows) - len(priced)} unpriced) · TTFT p50 {fmt_seconds(percentile(ttfts, 0.5))}", style="bold")
        out.table(["model", "calls", "requests", "failed", "in", "out", "cost", "TTFT p50"],
                  [[str(g["key"]), num(g["calls"]), num(g["requests"]), num(g["failed"]), num(g["input_tokens"]),
                    num(g["output_tokens"]), money(g["cost_usd"]), ms(g["ttft_p50"])] for g in totals],
                  title="store.totals('model'), the same as `llmrelay logs totals --db FILE`")
        for why in sorted({f"{r['provider']}:{r['model']}: {r['cost_reason']}" for r in rows if r["cost_usd"] is None}):
            out.line(f"no cost for {_shorten(why, 130)}", style="dim")
        out.line(f"`llmrelay chat` logs like this by default, to {default_path()}; `llmrelay logs list` reads it.",
                 style="dim")
        failed = sum(c[2] not in ("ok", "truncated") for c in self.calls)
        if len(calls) != len(self.calls) or statuses.get("error", 0) < failed:
            raise AssertionError(f"{len(self.calls)} calls made, {len(calls)} logged, statuses {dict(statuses)}")


def _shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_demo(*, fast: bool = False, plain: bool = False, out: Out | None = None) -> int:
    out = out or Out(plain=plain)
    with tempfile.TemporaryDirectory(prefix="llmrelay-demo-", ignore_cleanup_errors=True) as log_dir:
        return _run(out, fast, os.path.join(log_dir, "demo-logs.db"))


def _run(out: Out, fast: bool, log_path: str) -> int:
    started = time.perf_counter()
    with ReplayServer() as server:
        try:  # every request of the demo is logged to a temporary SQLite file (section 7 reads it)
            client = client_for(server, log=log_path)
            hook = next(h for h in client.hooks if type(h).__name__ == "LogHook")
        except Exception:  # e.g. a Python without sqlite3: the demo runs, section 7 is skipped
            client, hook = client_for(server), None
        demo = Demo(out, server, client, fast, log_path, hook)
        out.rule("llmrelay demo")
        out.line("Real provider streams, recorded from the real APIs, replayed byte for byte by")
        out.line(f"llmrelay.testing.ReplayServer at {server.url}, one event at a time.")
        out.line("No API key, no network: the client is an ordinary llmrelay.Client pointed at the server.")
        try:
            demo.section("1. One interface, four wire protocols", demo.tour)
            demo.section("2. Reasoning, kept apart from the answer", demo.reasoning)
            demo.section("3. A tool call assembled from streamed fragments", demo.tools)
            demo.section("4. A tool executed in the middle of the stream", demo.tool_loop)
            demo.section("5. Errors keep the partial response", demo.errors)
            demo.section("6. A stream cut mid-answer, recovered by fallback", demo.fallback)
        finally:
            client.close()
            # Connections the client just closed may still be winding down in the
            # server thread; their cancellation is not worth a log line.
            asyncio_log = logging.getLogger("asyncio")
            level = asyncio_log.level
            asyncio_log.setLevel(logging.CRITICAL)
            try:
                server.stop()
            finally:
                asyncio_log.setLevel(level)
    demo.summary()
    demo.section("7. Every call logged, read back from the log store", demo.logs)
    if hook is not None:
        hook.close(5)  # before the temporary directory goes
    elapsed = time.perf_counter() - started
    if demo.failures:
        out.line(f"demo FAILED: {len(demo.failures)} problem(s) in {len(demo.calls)} calls", style="bold red")
        for f in demo.failures:
            out.line(f"  - {f}", style="red")
        return 1
    out.line(f"demo OK: {len(demo.calls)} calls in {elapsed:.1f} s", style="bold green")
    return 0
