"""An incremental JSON parser that shows the value as far as it can be read, chunk by chunk.

    p = PartialJSONParser()
    for chunk in ['{"city": "San', ' Francisco", "temp', 'erature": 18', ', "days": [1, 2]}']:
        if p.feed(chunk):            # True when the visible value changed
            print(p.snapshot())
    # {'city': 'San'}
    # {'city': 'San Francisco'}
    # {'city': 'San Francisco', 'temperature': 18, 'days': [1, 2]}   (18 could still grow before the ',')
    value = p.close()                # the whole value, exactly as json.loads reads it

What a snapshot shows (never an invalid intermediate state):

- Containers appear as soon as they open (`{}` / `[]`); a key appears once its
  string is complete *and* its value has started.
- Strings appear as soon as they open and only grow. A pending escape (`\\`,
  `\\u00`) or a high surrogate waiting for its pair is held back.
- Numbers, `true`, `false` and `null` appear only when complete (`12` could
  still become `123`, `1.5e3`; `tr` is nothing yet). A number at the very top
  level completes at `close()`.
- Once a value is complete it never changes again, except when a duplicate key
  is repeated later (the later value wins, as in `json.loads`).

Cost: the parser keeps its state between chunks, so each character is read
once; there is no re-parsing of the prefix. A snapshot copies only the open
path (the containers from the root to the value being filled, shallowly);
closed subtrees are shared between snapshots and never mutated again, so a
snapshot handed out stays valid forever.

Errors: input that is not JSON raises `PartialJSONError` (a `ValueError`) at
the chunk where it becomes certain, and again on any later `feed`/`close`.
The grammar is RFC 8259 (no `NaN`/`Infinity`, no raw control characters in
strings), the same values as `json.loads`.

`lenient=True` skips anything before the first `{` or `[` (prose, a Markdown
code fence) and ignores anything after the top-level value ends: for models
that were only *asked* to answer in JSON.

`watch=("items",)` reports each element of the array at that path once it is
complete, in `parser.items` as `(index, value)` pairs (the caller drains the
list); `watch=()` watches a top-level array.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PartialJSONParser", "PartialJSONError", "MISSING", "parse_partial"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: What `snapshot()` returns while nothing of the value can be shown yet.
MISSING: Any = _Missing()


class PartialJSONError(ValueError):
    """The text is not JSON (or ended before the value was complete, at `close()`)."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} (at character {position})")
        self.position = position


_WS = frozenset(" \t\n\r")
_STR_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_NUM_RUN = re.compile(r"[-+0-9.eE]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_OPEN = re.compile(r"[\[{]")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}

# states between tokens
_VALUE = 0  # a value must come (after ':' / ',' in an array / at the start)
_FIRST_KEY = 1  # after '{': a key or '}'
_KEY = 2  # after ',' in an object: a key
_COLON = 3  # after a key
_NEXT = 4  # after a value inside a container: ',' or the closing bracket
_FIRST_ITEM = 5  # after '[': a value or ']'
_DONE = 6  # the top-level value is complete
_SEEK = 7  # lenient: looking for the first '{' or '['
_TRAILING = 8  # lenient: after the value; the rest is ignored
# states inside a token
_STRING = 10
_NUMBER_TOKEN = 11
_LITERAL = 12


class _Frame:
    """An open container: the live object, its kind, the key of the value being filled."""

    __slots__ = ("container", "is_obj", "key", "depth", "prefix", "watched")

    def __init__(self, container: Any, is_obj: bool, depth: int, prefix: bool, watched: bool):
        self.container = container
        self.is_obj = is_obj
        self.key: str | None = None
        self.depth = depth
        self.prefix = prefix  # the path to this container is a prefix of the watched path
        self.watched = watched  # an array whose complete elements are reported


class PartialJSONParser:
    """Feed text chunks; read `snapshot()` at any time; `close()` at the end. See the module docstring."""

    __slots__ = (
        "_state", "_stack", "_root", "_pos", "_error", "_lenient", "_watch", "_watch_root",
        "_str_key", "_pieces", "_esc", "_high", "_tok", "_word", "_changed", "_snap", "items",
    )

    def __init__(self, *, lenient: bool = False, watch: tuple[Any, ...] | None = None, watch_root_array: bool = False):
        self._state = _SEEK if lenient else _VALUE
        self._stack: list[_Frame] = []
        self._root: Any = MISSING
        self._pos = 0  # characters consumed before the current chunk
        self._error: PartialJSONError | None = None
        self._lenient = lenient
        self._watch = tuple(watch) if watch is not None else None
        self._watch_root = watch_root_array
        # the open string: is it a key, its pieces, a pending escape, a held high surrogate
        self._str_key = False
        self._pieces: list[str] = []
        self._esc = ""
        self._high = ""
        # the open number or literal
        self._tok = ""
        self._word = ""
        self._changed = False
        self._snap: Any = MISSING
        #: Completed elements of the watched array, `(index, value)`, for the caller to drain.
        self.items: list[tuple[int, Any]] = []

    # -- public -----------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The top-level value is complete (what follows can only be whitespace)."""
        return self._state in (_DONE, _TRAILING)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, text: str) -> bool:
        """Parse one more chunk. Returns True when the visible value changed.

        Raises `PartialJSONError` if the text stops being JSON (and on every call after)."""
        if self._error is not None:
            raise self._error
        self._changed = False
        try:
            self._run(text)
        except PartialJSONError as exc:
            self._error = exc
            raise
        finally:
            self._pos += len(text)
        if self._changed:
            self._snap = None  # rebuilt on demand
            return True
        return False

    def snapshot(self) -> Any:
        """The value as far as it can be read (`MISSING` if nothing yet). Never mutated afterwards."""
        if self._snap is None:
            self._snap = self._build()
        return self._snap

    def close(self) -> Any:
        """End of input: the complete value. Raises `PartialJSONError` if it is incomplete."""
        if self._error is not None:
            raise self._error
        state = self._state
        if state == _NUMBER_TOKEN and not self._stack:
            try:
                self._end_number(0)
            except PartialJSONError as exc:
                self._error = exc
                raise
            self._snap = None
            state = self._state
        if state not in (_DONE, _TRAILING):
            empty = state == _SEEK or (state == _VALUE and not self._stack)
            what = "no JSON value found" if empty else "the JSON value is incomplete"
            self._error = PartialJSONError(what, self._pos)
            raise self._error
        return self._root

    # -- snapshot -----------------------------------------------------------------
    def _build(self) -> Any:
        stack = self._stack
        leaf: Any = MISSING
        if self._state == _STRING and not self._str_key:
            leaf = "".join(self._pieces) if len(self._pieces) != 1 else self._pieces[0]
        if not stack:
            return self._root if self._root is not MISSING else leaf
        child: Any = MISSING
        for frame in reversed(stack):
            copy = frame.container.copy()
            if child is not MISSING:  # the open child container, replaced by its own copy
                if frame.is_obj:
                    copy[frame.key] = child
                else:
                    copy[-1] = child
            elif leaf is not MISSING:
                if frame.is_obj:
                    copy[frame.key] = leaf
                else:
                    copy.append(leaf)
            child = copy
        return child

    # -- the machine --------------------------------------------------------------
    def _fail(self, message: str, i: int) -> PartialJSONError:
        return PartialJSONError(message, self._pos + i)

    def _run(self, s: str) -> None:
        i = 0
        n = len(s)
        while i < n:
            state = self._state
            if state >= _STRING:  # inside a token
                if state == _STRING:
                    i = self._string(s, i, n)
                    continue
                if state == _NUMBER_TOKEN:
                    j = _NUM_RUN.match(s, i).end()  # type: ignore[union-attr]
                    self._tok += s[i:j]
                    if j == n:
                        return
                    self._end_number(j)
                    i = j
                    continue
                # a literal: true / false / null
                word = self._word
                need = len(word) - len(self._tok)
                piece = s[i : i + need]
                tok = self._tok + piece
                if not word.startswith(tok):
                    raise self._fail(f"invalid literal (expected {word!r})", i)
                i += len(piece)
                if len(tok) == len(word):
                    self._tok = ""
                    self._value(_LITERALS[word[0]][1])
                else:
                    self._tok = tok
                continue
            c = s[i]
            if c in _WS:
                i += 1
                continue
            if state == _VALUE or state == _FIRST_ITEM:
                if state == _FIRST_ITEM and c == "]":
                    self._close()
                    i += 1
                    continue
                i = self._start_value(s, i, c)
            elif state == _NEXT:
                frame = self._stack[-1]
                if c == ",":
                    self._state = _KEY if frame.is_obj else _VALUE
                elif c == ("}" if frame.is_obj else "]"):
                    self._close()
                else:
                    raise self._fail(f"expected ',' or {'}' if frame.is_obj else ']'!r}, got {c!r}", i)
                i += 1
            elif state == _FIRST_KEY or state == _KEY:
                if c == '"':
                    self._state = _STRING
                    self._str_key = True
                    self._pieces = []
                elif c == "}" and state == _FIRST_KEY:
                    self._close()
                else:
                    raise self._fail(f"expected a string key, got {c!r}", i)
                i += 1
            elif state == _COLON:
                if c != ":":
                    raise self._fail(f"expected ':', got {c!r}", i)
                self._state = _VALUE
                i += 1
            elif state == _SEEK:
                m = _OPEN.search(s, i)
                if m is None:
                    return
                i = m.start()
                self._state = _VALUE
            elif state == _DONE:
                if self._lenient:
                    self._state = _TRAILING
                    return
                raise self._fail(f"extra data after the JSON value: {c!r}", i)
            else:  # _TRAILING
                return

    def _start_value(self, s: str, i: int, c: str) -> int:
        if c == '"':
            self._state = _STRING
            self._str_key = False
            self._pieces = []
            self._changed = True  # "" is visible at once
            return i + 1
        if c == "{" or c == "[":
            self._open(c == "{")
            return i + 1
        if c == "-" or "0" <= c <= "9":
            j = _NUM_RUN.match(s, i).end()  # type: ignore[union-attr]
            if j < len(s):  # the number ends in this chunk (the usual case)
                self._tok = s[i:j]
                self._end_number(j)
                return j
            self._state = _NUMBER_TOKEN
            self._tok = s[i:j]
            return j
        lit = _LITERALS.get(c)
        if lit is not None:
            self._state = _LITERAL
            self._word = lit[0]
            self._tok = ""
            return i
        raise self._fail(f"expected a JSON value, got {c!r}", i)

    def _string(self, s: str, i: int, n: int) -> int:
        """Inside a string: copy runs of plain characters, decode escapes, stop at the closing quote."""
        pieces = self._pieces
        while i < n:
            if self._esc:
                i = self._escape(s, i, n)
                continue
            j = _STR_RUN.match(s, i).end()  # type: ignore[union-attr]
            if j > i:
                if self._high:
                    self._flush_high()
                pieces.append(s[i:j])
                if not self._str_key:
                    self._changed = True
                if j == n:
                    return n
            c = s[j]
            if c == '"':
                if self._high:
                    self._flush_high()
                text = "".join(pieces) if len(pieces) != 1 else pieces[0]
                self._pieces = []
                if self._str_key:
                    self._stack[-1].key = text
                    self._state = _COLON
                else:
                    self._value(text, False)  # already visible as it grew
                return j + 1
            if c == "\\":
                self._esc = "\\"
                i = j + 1
                continue
            raise self._fail(f"invalid control character {c!r} in a string", j)
        return i

    def _escape(self, s: str, i: int, n: int) -> int:
        esc = self._esc
        if len(esc) == 1:
            c = s[i]
            if c == "u":
                esc = "\\u"
                i += 1
            elif c in _ESCAPES:
                self._esc = ""
                if self._high:
                    self._flush_high()
                self._char(_ESCAPES[c])
                return i + 1
            else:
                raise self._fail(f"invalid escape '\\{c}' in a string", i)
        need = 6 - len(esc)
        piece = s[i : i + need]
        esc += piece
        i += len(piece)
        if len(esc) < 6:
            self._esc = esc
            return i
        self._esc = ""
        hexa = esc[2:]
        if not _HEX4.fullmatch(hexa):
            raise self._fail(f"invalid \\u escape {esc!r}", i - 1)
        code = int(hexa, 16)
        if self._high:
            high = self._high
            if 0xDC00 <= code <= 0xDFFF:  # the pair completes
                self._high = ""
                self._char(chr(0x10000 + (((ord(high) - 0xD800) << 10) | (code - 0xDC00))))
                return i
            self._flush_high()  # a lone high surrogate, as json.loads keeps it
        if 0xD800 <= code <= 0xDBFF:
            self._high = chr(code)  # held back until we see what follows
        else:
            self._char(chr(code))
        return i

    def _flush_high(self) -> None:
        high, self._high = self._high, ""
        self._char(high)

    def _char(self, ch: str) -> None:
        self._pieces.append(ch)
        if not self._str_key:
            self._changed = True

    def _end_number(self, i: int) -> None:
        tok, self._tok = self._tok, ""
        if tok.isdigit() and (tok[0] != "0" or len(tok) == 1) and len(tok) < 100:  # fast path: a small int
            self._value(int(tok))
            return
        m = _NUMBER.fullmatch(tok)
        if m is None:
            raise self._fail(f"invalid number {tok!r}", i)
        try:
            value: Any = float(tok) if (m.group(1) or m.group(2)) else int(tok)
        except ValueError as exc:  # e.g. more digits than int() accepts
            raise self._fail(f"invalid number: {exc}", i) from None
        self._value(value)

    # -- building ------------------------------------------------------------------
    def _value(self, value: Any, changed: bool = True) -> None:
        """A scalar is complete."""
        if changed:
            self._changed = True
        stack = self._stack
        if not stack:
            self._root = value
            self._state = _DONE
            return
        frame = stack[-1]
        if frame.is_obj:
            frame.container[frame.key] = value
        else:
            frame.container.append(value)
            if frame.watched:
                self.items.append((len(frame.container) - 1, value))
        self._state = _NEXT

    def _open(self, is_obj: bool) -> None:
        self._changed = True
        container: Any = {} if is_obj else []
        stack = self._stack
        watch = self._watch
        if not stack:
            self._root = container
            prefix = watch is not None
            watched = not is_obj and watch is not None and (not watch or self._watch_root)
            depth = 0
        else:
            parent = stack[-1]
            if parent.is_obj:
                key: Any = parent.key
                parent.container[key] = container
            else:
                key = len(parent.container)
                parent.container.append(container)
            depth = parent.depth + 1
            prefix = parent.prefix and parent.depth < len(watch) and watch[parent.depth] == key  # type: ignore[arg-type,index]
            watched = prefix and not is_obj and depth == len(watch)  # type: ignore[arg-type]
        stack.append(_Frame(container, is_obj, depth, prefix, watched))
        self._state = _FIRST_KEY if is_obj else _FIRST_ITEM

    def _close(self) -> None:
        stack = self._stack
        frame = stack.pop()
        if not stack:
            self._state = _DONE
            return
        parent = stack[-1]
        if parent.watched:
            self.items.append((len(parent.container) - 1, frame.container))
        self._state = _NEXT


def parse_partial(text: str, *, lenient: bool = False) -> Any:
    """The value as far as `text` can be read (`MISSING` if nothing yet); raises `PartialJSONError`."""
    p = PartialJSONParser(lenient=lenient)
    p.feed(text)
    if p.done or (p._state == _NUMBER_TOKEN and not p._stack):  # a complete top-level number
        try:
            return p.close()
        except PartialJSONError:
            return p.snapshot()
    return p.snapshot()
