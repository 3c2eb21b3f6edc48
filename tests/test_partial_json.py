"""The incremental partial-JSON parser (`llmrelay.partial_json`).

What a partial shows, checked at every chunk boundary: a prefix-consistent view
of the final value (containers only grow, strings only grow, numbers / literals /
keys appear only once complete, a complete value never changes), snapshots never
mutated after they are handed out, the last one equal to `json.loads` of the
whole. Property tests split random JSON documents at random points and feed
random text: nothing but `PartialJSONError` is ever raised, and the parser
accepts exactly what `json.loads` accepts. Cost: each chunk is parsed once
(no re-parsing of the prefix) and closed subtrees are shared between snapshots.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmrelay.structured.partial_json import MISSING, PartialJSONError, PartialJSONParser, parse_partial


# -- helpers --------------------------------------------------------------------------------
def consistent(before, after) -> bool:
    """`after` extends `before`: same keys (maybe more), longer lists, grown strings, equal scalars."""
    if before is MISSING:
        return True
    if isinstance(before, dict):
        return isinstance(after, dict) and all(k in after and consistent(v, after[k]) for k, v in before.items())
    if isinstance(before, list):
        if not isinstance(after, list) or len(after) < len(before):
            return False
        # every element but the last was complete when `before` was taken; the last may have grown
        return all(a == b for a, b in zip(before[:-1], after)) and (not before or consistent(before[-1], after[len(before) - 1]))
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    return type(before) is type(after) and before == after


def has_duplicate_keys(text: str) -> bool:
    found = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            found.append(True)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return bool(found)


def feed_all(doc: str, cuts: list[int], **kw) -> tuple[PartialJSONParser, list, list]:
    """Feed `doc` split at `cuts`; returns the parser, the snapshots taken after each changing
    chunk, and a deep copy of each at the time it was handed out."""
    p = PartialJSONParser(**kw)
    snaps, frozen = [], []
    prev = 0
    for cut in [*sorted(set(cuts)), len(doc)]:
        if cut <= prev:
            continue
        if p.feed(doc[prev:cut]):
            s = p.snapshot()
            snaps.append(s)
            frozen.append(copy.deepcopy(s))
        prev = cut
    return p, snaps, frozen


def check_document(doc: str, cuts: list[int]) -> None:
    expected = json.loads(doc)
    p, snaps, frozen = feed_all(doc, cuts)
    final = p.close()
    assert final == expected
    assert p.snapshot() == expected  # the last partial equals the parsed whole
    for a, b in zip(snaps, snaps[1:]):
        assert consistent(a, b), (a, b)
    for s in snaps:
        assert consistent(s, expected), (s, expected)
    # nothing handed out was mutated afterwards
    assert snaps == frozen


DOCS = [
    '{"city": "San Francisco", "temperature": 18.5, "days": [1, 2, 3], "ok": true, "none": null}',
    '[{"a": [], "b": {}}, [[[]]], "x", -0.5e-3, 0, false]',
    '{"nested": {"deep": {"deeper": [{"k": "v"}, {"k": "w"}]}}, "after": "yes"}',
    '"a top-level string with \\"escapes\\" \\\\ \\/ \\b\\f\\n\\r\\t and \\u00e9 \\ud83d\\ude00"',
    '  {"lone": "\\ud83d then \\udc00 alone", "pair": "\\uD83D\\uDE00"}  ',
    '["\\ud800\\"x\\ud83d\\n", "\\ud83d\\ud83d\\ude00", "\\ud83d\\u0041"]',  # a held high surrogate, then not its pair
    '{"unicode": "café 😀 naïve", "empty": "", "k": {"": ""}}',
    "12345",
    "-1.25E+10",
    "true",
    "null",
    "[]",
    "{}",
]


@pytest.mark.parametrize("doc", DOCS)
def test_every_boundary(doc):
    """Split at every single position (and into single characters)."""
    for cut in range(len(doc) + 1):
        check_document(doc, [cut])
    check_document(doc, list(range(len(doc))))


def test_a_repeated_key_replaces_its_value_as_json_loads_does():
    doc = '{"dup": 1, "x": 0, "dup": [2]}'
    for cut in range(len(doc) + 1):
        p, snaps, frozen = feed_all(doc, [cut])
        assert p.close() == json.loads(doc) == {"dup": [2], "x": 0}
        assert snaps == frozen


def test_what_a_partial_shows():
    p = PartialJSONParser()
    steps = [
        ('{"ci', {}),  # the object is open; the key is not complete
        ('ty"', {}),  # the key is complete but its value has not started
        (': "San', {"city": "San"}),
        (' Fran', {"city": "San Fran"}),
        ('cisco", "temp": 1', {"city": "San Francisco"}),  # 1 may still become 12 or 1.5
        ("8", {"city": "San Francisco"}),
        (".5,", {"city": "San Francisco", "temp": 18.5}),
        (' "ok": tr', {"city": "San Francisco", "temp": 18.5}),  # a literal appears only whole
        ('ue, "list": [', {"city": "San Francisco", "temp": 18.5, "ok": True, "list": []}),
        ('{"x": nu', {"city": "San Francisco", "temp": 18.5, "ok": True, "list": [{}]}),
        ("ll}]}", {"city": "San Francisco", "temp": 18.5, "ok": True, "list": [{"x": None}]}),
    ]
    for chunk, expected in steps:
        p.feed(chunk)
        snap = p.snapshot()
        assert (snap if snap is not MISSING else None) == expected, chunk
    assert p.done and p.close() == steps[-1][1]


def test_feed_reports_visible_changes_only():
    p = PartialJSONParser()
    assert p.snapshot() is MISSING
    assert p.feed("  ") is False
    assert p.feed("{") is True  # {} appears
    assert p.feed('"ke') is False  # a key in progress shows nothing
    assert p.feed('y": ') is False
    assert p.feed("12") is False  # an open number shows nothing
    assert p.feed(",") is True
    assert p.feed('"s": "') is True  # "" appears
    assert p.feed("\\") is False  # a pending escape is held back
    assert p.feed("u00") is False
    assert p.feed("e9") is True
    assert p.snapshot() == {"key": 12, "s": "é"}
    assert p.feed('"') is False  # closing the string changes nothing visible
    assert p.feed("}") is False


def test_surrogate_pairs_across_chunks():
    doc = '"\\ud83d\\ude00!"'
    for cut in range(len(doc) + 1):
        p = PartialJSONParser()
        p.feed(doc[:cut])
        shown = p.snapshot()
        # a high surrogate is never shown alone while its pair may still follow
        assert shown is MISSING or "\ud83d" not in shown
        p.feed(doc[cut:])
        assert p.close() == "😀!"


def test_snapshots_share_closed_subtrees():
    """Only the open path is copied: a closed child is the same object in later snapshots."""
    p = PartialJSONParser()
    p.feed('{"done": {"a": [1, 2]}, "open": [{"x": 1}, ')
    first = p.snapshot()
    p.feed('{"y": "gr')
    second = p.snapshot()
    assert second["done"] is first["done"]  # closed: shared
    assert second["open"][0] is first["open"][0]
    assert second is not first and second["open"] is not first["open"]  # the open path is copied
    assert first == {"done": {"a": [1, 2]}, "open": [{"x": 1}]}  # and the old snapshot is untouched
    assert second == {"done": {"a": [1, 2]}, "open": [{"x": 1}, {"y": "gr"}]}


def test_watch_reports_each_item_once_when_complete():
    doc = '{"items": [{"n": 1, "tags": ["a"]}, "two", 3, [4], {"n": 5}], "items2": [9]}'
    for cuts in ([], list(range(len(doc))), [7, 13, 30, 41]):
        p = PartialJSONParser(watch=("items",))
        seen: list = []
        prev = 0
        for cut in [*cuts, len(doc)]:
            p.feed(doc[prev:cut])
            prev = cut
            seen.extend(p.items)
            for _, item in p.items:  # an item is reported only when it is complete
                assert item in json.loads(doc)["items"]
            p.items.clear()
        assert seen == list(enumerate(json.loads(doc)["items"]))


def test_watch_a_top_level_array():
    p = PartialJSONParser(watch=())
    p.feed('[{"a": 1}, {"a"')
    assert p.items == [(0, {"a": 1})]
    p.feed(": 2}]")
    assert p.items == [(0, {"a": 1}), (1, {"a": 2})]
    # watching a nested path also accepts a bare top-level array when asked
    p = PartialJSONParser(watch=("items",), watch_root_array=True)
    p.feed("[1, 2]")
    assert p.items == [(0, 1), (1, 2)]


def test_lenient_skips_prose_and_fences():
    text = 'Sure! Here it is:\n```json\n{"a": [1, {"b": "c"}]}\n```\nAnything else?'
    for cut in range(len(text) + 1):
        p = PartialJSONParser(lenient=True)
        p.feed(text[:cut])
        p.feed(text[cut:])
        assert p.close() == {"a": [1, {"b": "c"}]}
    with pytest.raises(PartialJSONError, match="no JSON value"):
        PartialJSONParser(lenient=True).close()
    p = PartialJSONParser(lenient=True)
    p.feed("no json here")
    with pytest.raises(PartialJSONError, match="no JSON value"):
        p.close()


@pytest.mark.parametrize("doc", [
    "{", '{"a"', '{"a":', '{"a": 1', '[1, 2', '"open', "tru", "-", "",
])
def test_incomplete_documents_fail_at_close(doc):
    p = PartialJSONParser()
    p.feed(doc)  # a prefix of valid JSON is never an error while it can still continue
    with pytest.raises(PartialJSONError):
        p.close()


@pytest.mark.parametrize("doc", [
    "{]", "[}", '{"a" 1}', '{"a": 1,}', "[1,]", "[1 2]", "{1: 2}", "01", "1.", "-a", ".5", "1e",
    "tru e", "nul", "NaN", "Infinity", "-Infinity", '"\\x"', '"\\u12G4"', '"a\nb"', '"tab\there"',
    "[1] 2", '{"a": 1}}', "'single'", "True",
])
def test_invalid_documents_raise_the_documented_error(doc):
    if doc not in ("NaN", "Infinity", "-Infinity"):  # json.loads extensions; not JSON (RFC 8259)
        with pytest.raises(json.JSONDecodeError):
            json.loads(doc)
    p = PartialJSONParser()
    with pytest.raises(PartialJSONError) as info:
        p.feed(doc)
        p.close()
    assert isinstance(info.value, ValueError) and info.value.position >= 0
    # the parser stays failed
    with pytest.raises(PartialJSONError):
        p.feed("1")
    with pytest.raises(PartialJSONError):
        p.close()


def test_the_error_comes_at_the_chunk_where_it_is_certain():
    p = PartialJSONParser()
    p.feed('{"a": [1, 2')
    with pytest.raises(PartialJSONError, match="at character 11"):
        p.feed("}")
    assert p.failed


def test_parse_partial():
    assert parse_partial('{"a": "b') == {"a": "b"}
    assert parse_partial("12") == 12
    assert parse_partial('{"a": 1') == {}
    assert parse_partial("") is MISSING
    assert parse_partial('text {"a": [1, 2', lenient=True) == {"a": [1]}


# -- property tests -------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
formats = st.sampled_from([
    {}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}, {"indent": "\t", "ensure_ascii": False},
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, fmt=formats, data=st.data())
def test_random_documents_split_at_random_points(value, fmt, data):
    doc = json.dumps(value, **fmt)
    cuts = data.draw(st.lists(st.integers(0, len(doc)), max_size=40))
    check_document(doc, cuts)


@settings(max_examples=300, deadline=None)
@given(value=json_values, data=st.data())
def test_random_items_are_reported_once_in_order(value, data):
    items = value if isinstance(value, list) else [value]
    doc = json.dumps({"items": items, "other": [value]})
    cuts = data.draw(st.lists(st.integers(0, len(doc)), max_size=30))
    p = PartialJSONParser(watch=("items",))
    seen: list = []
    prev = 0
    for cut in [*sorted(cuts), len(doc)]:
        p.feed(doc[prev:cut])
        prev = max(prev, cut)
        seen.extend(p.items)
        p.items.clear()
    assert seen == list(enumerate(json.loads(doc)["items"]))


def _mutations(doc: str, rng: random.Random) -> str:
    chars = list(doc)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        pos = rng.randrange(len(chars) + 1)
        piece = rng.choice(list('{}[]",:\\ 0123456789.eE+-truefalsnl\n\tab\u00e9'))
        if op == 0 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == 1:
            chars.insert(pos, piece)
        elif chars:
            chars[min(pos, len(chars) - 1)] = piece
    return "".join(chars)


@settings(max_examples=500, deadline=None)
@given(value=json_values, seed=st.integers(0, 2**32), data=st.data())
def test_mutated_documents_agree_with_json_loads(value, seed, data):
    """Broken JSON split anywhere: only `PartialJSONError`, and accepted exactly when json.loads accepts."""
    text = _mutations(json.dumps(value), random.Random(seed))
    assume("NaN" not in text and "Infinity" not in text)  # json.loads extensions, not JSON
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=20)))
    try:
        expected = json.loads(text)
        ok = True
    except (ValueError, RecursionError):
        ok = False
    p = PartialJSONParser()
    snaps = []
    try:
        prev = 0
        for cut in [*cuts, len(text)]:
            if p.feed(text[prev:cut]):
                snaps.append(p.snapshot())
            prev = max(prev, cut)
        got = p.close()
    except PartialJSONError:
        assert not ok, text
        return
    assert ok, text
    assert got == expected
    if not has_duplicate_keys(text):  # a repeated key legitimately replaces its value
        for s in snaps:
            assert consistent(s, got), (s, got)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('{}[]",: \\0123456789.-+eEtrufalsn\u00e9x')), max_size=40), data=st.data())
def test_random_text_never_crashes(text, data):
    assume("NaN" not in text and "Infinity" not in text)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    try:
        expected, ok = json.loads(text), True
    except ValueError:
        expected, ok = None, False
    p = PartialJSONParser()
    try:
        prev = 0
        for cut in [*cuts, len(text)]:
            p.feed(text[prev:cut])
            p.snapshot()
            prev = max(prev, cut)
        got = p.close()
    except PartialJSONError:
        assert not ok
        return
    assert ok and got == expected


# -- cost -------------------------------------------------------------------------------------------
def _chunks(n_items: int) -> list[str]:
    doc = json.dumps({"title": "report", "items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "score": i / 7}
                                                   for i in range(n_items)]})
    return [doc[i : i + 7] for i in range(0, len(doc), 7)]


def _cost_per_chunk(chunks: list[str], snapshot: bool) -> float:
    """Work per chunk, counted (not timed): every Python and C function call the parser makes,
    plus the characters of every string argument handed to a C function (a re-scan of the prefix
    by `json.loads`, a regex or `str.find` shows up there). Deterministic, so load cannot flake it."""
    p = PartialJSONParser(watch=("items",))
    work = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal work
        if event == "call":
            work += 1
        elif event == "c_call":
            work += 1
            for value in frame.f_locals.values() if frame.f_code.co_filename.endswith("partial_json.py") else ():
                if type(value) is str and len(value) > 64:
                    work += len(value) // 64
    sys.setprofile(count)
    try:
        for c in chunks:
            if p.feed(c) and snapshot:
                p.snapshot()
            p.items.clear()
    finally:
        sys.setprofile(None)
    return work / len(chunks)


def test_cost_per_chunk_stays_flat_as_the_json_grows():
    """Parsing is incremental: 8x the document is ~8x the work, not 64x (a re-parse of the
    prefix per chunk would be quadratic). With snapshots too (only the open path is copied)."""
    small, large = _chunks(100), _chunks(800)
    for snapshot in (False, True):
        ratio = _cost_per_chunk(large, snapshot) / _cost_per_chunk(small, snapshot)
        assert ratio < 1.5, (snapshot, ratio)


def test_each_character_is_read_once():
    """A structural check of incrementality, independent of timing: feeding 1 character at a
    time does not touch the already-consumed prefix (the parser holds no text buffer)."""
    p = PartialJSONParser()
    doc = json.dumps({"k": ["x" * 50] * 50})
    for ch in doc:
        p.feed(ch)
        held = sum(len(x) for x in p._pieces) + len(p._tok) + len(p._esc)
        assert held <= 50  # at most the open token (one string), never the document
    assert p.close() == json.loads(doc)
