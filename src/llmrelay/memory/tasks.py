"""Reminders: the model schedules a task for the user; when it is due, the model gets it at the start
of that user's next conversation.

- `schedule_tool(memory, user_id)`: the `schedule_task(task, due)` tool, bound to one user (the model
  cannot choose whose tasks it writes). `due` is an ISO 8601 date or date-time ("2026-12-24",
  "2026-12-24T09:00", "...+01:00"; UTC without an offset) or a delay ("in 2 hours", "in 3 days",
  "in 45 minutes"). The task is stored per user (`tasks` table of the store).
- `deliver(memory, user_id, messages)`: on each call of a `with_memory` client, the user's tasks due by
  now are put in front of the model and marked "done": `Memory(reminders="system")` (the default)
  appends them to the system message; `reminders="tool"` adds a `due_tasks` tool call of the
  assistant and its result after the last message (as if the model had checked); None: off.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..messages import Message, TextPart, ToolCall

if TYPE_CHECKING:
    from .memory import Memory

SCHEDULE_TOOL = "schedule_task"
DUE_TOOL = "due_tasks"
SCHEDULE_DESCRIPTION = (
    "Schedule a reminder or follow-up for the user at a date/time; it will be shown to you in the user's "
    "first conversation after it is due. Use it when the user asks to be reminded of something, or when "
    "you promise to follow up later."
)
REMINDER_HEADER = "Reminders that are now due for the user (scheduled earlier; tell the user about them):"
_DELAY = re.compile(r"^\s*in\s+(\d+(?:\.\d+)?)\s*(second|sec|minute|min|hour|hr|h|day|d|week|w)s?\s*$", re.I)
_UNIT = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "hr": 3600, "h": 3600, "day": 86400,
         "d": 86400, "week": 604800, "w": 604800}


def parse_due(due: str, now: float | None = None) -> float:
    """Seconds since the epoch for `due` (see the module docstring); ValueError if unreadable."""
    now = time.time() if now is None else now
    text = (due or "").strip()
    m = _DELAY.match(text)
    if m:
        return now + float(m.group(1)) * _UNIT[m.group(2).lower()]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read the due time {due!r}: give an ISO 8601 date or date-time "
                         "(2026-12-24T09:00) or a delay ('in 2 hours')") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def schedule_tool(memory: Memory, user_id: str) -> Any:
    from ..tools.tool import Tool

    def schedule_task(task: str, due: str) -> str:
        try:
            due_at = parse_due(due)
        except ValueError as exc:
            return f"Not scheduled: {exc}"
        task_id = memory.store.add_task(user_id, task, due_at)
        return f"Scheduled task {task_id} for {_iso(due_at)}: {task.strip()}"

    schema = {
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "What to remind the user of, as a short sentence."},
            "due": {"type": "string", "description": "ISO 8601 date or date-time (UTC unless an offset is "
                    "given), or a delay such as 'in 2 hours'. Today is " + time.strftime("%Y-%m-%d", time.gmtime())},
        },
        "required": ["task", "due"],
    }
    return Tool(SCHEDULE_TOOL, SCHEDULE_DESCRIPTION, schema, schedule_task)


def deliver(memory: Memory, user_id: str, messages: list[Message], now: float | None = None) -> list[Message]:
    """`messages` with the user's due tasks offered to the model (see the module docstring); marks them done."""
    mode = memory.reminders
    if mode is None:
        return messages
    tasks = memory.store.due_tasks(user_id, now)
    if not tasks:
        return messages
    memory.store.mark_tasks_done(user_id, [t.id for t in tasks])
    lines = [f"- {t.text} (due {_iso(t.due_at)})" for t in tasks]
    if mode == "tool":
        call = ToolCall(id=f"call_due_{tasks[0].id}", name=DUE_TOOL, arguments={})
        return [*messages, Message.assistant("", [call]),
                Message.tool(call.id, REMINDER_HEADER + "\n" + "\n".join(lines), DUE_TOOL)]
    text = REMINDER_HEADER + "\n" + "\n".join(lines)
    if messages and messages[0].role == "system":
        first = messages[0]
        merged = Message("system", [*first.parts, TextPart("\n\n" + text)], first.tool_call_id, first.name)
        return [merged, *messages[1:]]
    return [Message.system(text), *messages]


__all__ = ["parse_due", "schedule_tool", "deliver", "SCHEDULE_TOOL", "DUE_TOOL", "REMINDER_HEADER"]
