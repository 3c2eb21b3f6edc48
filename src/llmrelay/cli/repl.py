"""`llmrelay chat` without a prompt, on a terminal: an interactive multi-turn session.

    $ llmrelay chat -m openai:gpt-4o-mini
    Chatting with openai:gpt-4o-mini · conversation 3f2a9c1b7d4e
    Type 'exit' or Ctrl-D to leave, '!multi' for several lines (end with '!end'), Ctrl-C to stop an answer.
    > Two names for a pet pelican
    ...

Each turn sends the whole conversation so far and is logged under the same
conversation id (`llmrelay chat --cid ID` continues it later). Ctrl-C while an
answer streams closes that request (its partial answer stays in the history,
logged as "aborted") and the session goes on; Ctrl-C at the prompt clears the
line. Line editing and history come from `readline` when Python has it.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from .common import EXIT_OK, _err

EXIT_WORDS = ("exit", "quit")
MULTI, END = "!multi", "!end"
PROMPT, MORE = "> ", "... "


def run_repl(chat: Any, send: Callable[[str, list[str]], int]) -> int:
    """Read turns until Ctrl-D or `exit`; `send(text, attachments)` runs one (see `cli/chat.py`)."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    continued = len(chat.messages)
    _err(f"Chatting with {chat.model} · conversation {chat.conversation_id}"
         + (f" (continuing: {continued} messages)" if continued else ""))
    _err(f"Type '{EXIT_WORDS[0]}' or Ctrl-D to leave, '{MULTI}' for several lines (end with '{END}'), "
         "Ctrl-C to stop an answer.")
    pending = list(chat.args.attachment)  # -a files go with the first prompt
    while True:
        text = read_turn()
        if text is None:
            break
        if not text.strip():
            continue
        if text.strip() in EXIT_WORDS:
            break
        attachments, pending = pending, []
        try:
            send(text, attachments)
        except KeyboardInterrupt:  # between requests (before the stream started): drop the turn
            sys.stderr.write("\n(interrupted)\n")
    _err(f"conversation {chat.conversation_id} (continue it: llmrelay chat --cid {chat.conversation_id})")
    return EXIT_OK


def read_turn() -> str | None:
    """One prompt from the user: a line, or the lines between `!multi` and `!end`; None: leave."""
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            sys.stderr.write("\n")
            return None
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            sys.stderr.write("\n")
            continue
        if line.strip() != MULTI:
            return line
        lines: list[str] = []
        try:
            while True:
                more = input(MORE)
                if more.strip() == END:
                    return "\n".join(lines)
                lines.append(more)
        except EOFError:
            return "\n".join(lines) if lines else None
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            continue
