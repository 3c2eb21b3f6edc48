"""Inline `<think>…</think>` reasoning (DeepSeek-R1 on Together and other hosts).

Active only when a choice's first content begins with `<think>`: then the text
up to `</think>` is reasoning, whatever the chunk boundaries (a tag may be
split across chunks). Otherwise text passes through untouched, so a model that
merely mentions the tag later is never misread.
"""

from __future__ import annotations

from .. import events as ev

_OPEN = "<think>"
_CLOSE = "</think>"


class ThinkTags:
    __slots__ = ("state", "held")

    def __init__(self) -> None:
        self.state = 0  # 0 undecided, 1 inside think, 2 plain text
        self.held = ""

    def feed(self, text: str, choice: int, out: list) -> None:
        if self.state == 2:
            out.append(ev.TextDelta(text, choice))
            return
        text = self.held + text
        self.held = ""
        if self.state == 0:
            stripped = text.lstrip()
            if len(stripped) < len(_OPEN) and _OPEN.startswith(stripped):
                self.held = text  # too early to tell
                return
            if not stripped.startswith(_OPEN):
                self.state = 2
                out.append(ev.TextDelta(text, choice))
                return
            self.state = 1
            text = stripped[len(_OPEN):]
        end = text.find(_CLOSE)
        if end >= 0:
            if end:
                out.append(ev.ReasoningDelta(text[:end], choice))
            self.state = 2
            rest = text[end + len(_CLOSE):]
            if rest:
                out.append(ev.TextDelta(rest, choice))
            return
        # hold back a suffix that may be the start of "</think>"
        keep = 0
        for k in range(min(len(_CLOSE) - 1, len(text)), 0, -1):
            if _CLOSE.startswith(text[-k:]):
                keep = k
                break
        if keep:
            self.held = text[-keep:]
            text = text[:-keep]
        if text:
            out.append(ev.ReasoningDelta(text, choice))

    def flush(self, choice: int, out: list) -> None:
        if self.held:
            kind = ev.ReasoningDelta if self.state == 1 else ev.TextDelta
            out.append(kind(self.held, choice))
            self.held = ""


#: A `ThinkTags` that has decided on plain text: shared (it holds nothing from then on), so a
#: decoder drops its own once the answer starts (one object less per stream in flight).
PLAIN = ThinkTags()
PLAIN.state = 2
#: The shared stand-in before a choice's first text: never fed (the decoder makes its own
#: `ThinkTags` for the first text that is not plain), so a stream waiting for its first bytes holds none.
UNDECIDED = ThinkTags()
