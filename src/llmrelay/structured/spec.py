"""The caller's output type, as a JSON schema the provider is asked for and a validator.

`OutputSpec` turns `output=` (a pydantic model, a dataclass, a TypedDict,
`list[Item]`, or a JSON schema dict) into the schema sent to the provider
(`OutputSchema`, what encoders read from `Call.output`; OpenAI's strict form
when one exists) and validates the final JSON once. `llmrelay.structured` runs
it inside a stream.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from .partial_json import MISSING

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# -- what the encoders read ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutputSchema:
    """`Call.output`: what a protocol encoder needs to ask for structured output."""

    name: str
    #: The JSON schema (an object at the root), as portable as possible.
    schema: dict[str, Any]
    #: True when `strict_schema` exists (OpenAI strict mode).
    strict: bool = False
    strict_schema: dict[str, Any] | None = None
    description: str = ""

    def openai(self) -> tuple[dict[str, Any], bool]:
        """(schema, strict) for OpenAI's `json_schema` / strict tools."""
        if self.strict and self.strict_schema is not None:
            return self.strict_schema, True
        return self.schema, False


# -- the caller's type -------------------------------------------------------------------
class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(_format_errors(errors))
        self.errors = errors


def _format_errors(errors: list[dict[str, Any]]) -> str:
    lines = []
    for e in errors[:20]:
        loc = ".".join(str(x) for x in e.get("loc", ()) or ())
        lines.append(f"- {loc + ': ' if loc else ''}{e.get('msg', e)}")
    if len(errors) > 20:
        lines.append(f"- ... and {len(errors) - 20} more")
    return "\n".join(lines)


class OutputSpec:
    """The caller's `output=`: the schema to ask for, and the validators (built once per call)."""

    def __init__(self, output: Any):
        self.output = output
        self._adapter: Any = None  # pydantic TypeAdapter (a type) or None (a schema dict)
        self._item_adapter: Any = None
        self._user_schema: dict[str, Any] | None = None
        self._item_schema: Any = None
        strict_given: bool | None = None
        if isinstance(output, dict):
            schema, name, description, strict_given = _from_schema_dict(output)
            self._user_schema = schema
            root = schema
            if root.get("type") == "array":
                self._item_schema = root.get("items") if isinstance(root.get("items"), dict) else {}
        else:
            schema, name, description = self._from_type(output)
            root = schema
        self.wrap: str | None = None
        if root.get("type") != "object":
            self.wrap = "items" if root.get("type") == "array" else "value"
            schema = _wrap(schema, self.wrap)
        #: Where the streamed items are (None: not a list output).
        self.items_path: tuple[str, ...] | None = ("items",) if self.wrap == "items" else None
        if self._user_schema is not None:
            strict_schema = schema if strict_given is not False and _strict_copy(schema, fix=False) is not None else None
        else:
            strict_schema = _strict_copy(schema, fix=True)
        self.schema = schema
        self.name = name
        self.wire = OutputSchema(name, schema, strict_schema is not None, strict_schema, description)

    @classmethod
    def of(cls, output: Any) -> OutputSpec:
        return output if isinstance(output, OutputSpec) else cls(output)

    def _from_type(self, tp: Any) -> tuple[dict[str, Any], str, str]:
        try:
            from pydantic import TypeAdapter

            from ..tools.schema import _tidy_schema

            self._adapter = TypeAdapter(tp)
            schema = _root_inlined(_tidy_schema(self._adapter.json_schema()))
        except Exception as exc:
            raise InvalidRequestError(f"output={tp!r}: cannot build a JSON schema for it: {exc}") from None
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        item: Any = None
        if origin in (list, set, frozenset) and len(args) == 1:
            item = args[0]
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        if item is not None:
            from pydantic import TypeAdapter

            self._item_adapter = TypeAdapter(item)
        elif schema.get("type") == "array":  # e.g. a fixed tuple: items checked against their schema
            self._item_schema = schema.get("items") if isinstance(schema.get("items"), dict) else None
        if isinstance(tp, type):
            name = tp.__name__
        elif item is not None and isinstance(item, type):
            name = f"{item.__name__}_list"
        else:
            name = "output"
        description = schema.get("description") if isinstance(schema.get("description"), str) else ""
        return schema, _NAME_CHARS.sub("_", name)[:64] or "output", description or ""

    # -- reading answers ------------------------------------------------------------------
    def view(self, snapshot: Any) -> Any:
        """A partial snapshot as the caller sees it (unwrapped)."""
        if self.wrap is None or snapshot is MISSING:
            return snapshot
        if isinstance(snapshot, dict):
            return snapshot.get(self.wrap, MISSING)
        return snapshot  # a bare array/value where a wrapper was asked for: taken as it is

    def _unwrap(self, value: Any) -> Any:
        if self.wrap is not None and isinstance(value, dict) and self.wrap in value and (
            len(value) == 1 or self._user_schema is None
        ):
            return value[self.wrap]
        return value

    def validate(self, raw: str, *, lenient: bool = False) -> Any:
        """The answer's JSON text -> the validated object; raises `_Invalid`."""
        value = _load(raw, lenient)
        value = self._unwrap(value)
        if self._adapter is not None:
            return self._pydantic(self._adapter, value)
        from ..tools.schema import schema_errors

        problems = schema_errors(value, self._user_schema)
        if problems:
            raise _Invalid([{"type": "schema", "loc": (), "msg": p} for p in problems])
        return value

    def validate_item(self, value: Any) -> Any:
        if self._item_adapter is not None:
            return self._pydantic(self._item_adapter, value)
        if self._item_schema is not None:
            from ..tools.schema import schema_errors

            problems = schema_errors(value, self._item_schema)
            if problems:
                raise _Invalid([{"type": "schema", "loc": (), "msg": p} for p in problems])
        return value

    @staticmethod
    def _pydantic(adapter: Any, value: Any) -> Any:
        from pydantic import ValidationError

        try:
            # JSON mode, as the provider's JSON would be read (strict models accept ISO dates...)
            return adapter.validate_json(json.dumps(value, ensure_ascii=False))
        except ValidationError as exc:
            raise _Invalid([dict(e) for e in exc.errors(include_url=False)]) from None


def _from_schema_dict(output: dict[str, Any]) -> tuple[dict[str, Any], str, str, bool | None]:
    """A JSON schema, or the OpenAI `{"name", "schema", "strict"?, "description"?}` shape
    (also inside `{"type": "json_schema", "json_schema": {...}}`)."""
    if output.get("type") == "json_schema" and isinstance(output.get("json_schema"), dict):
        output = output["json_schema"]
    strict: bool | None = None
    if isinstance(output.get("schema"), dict) and "properties" not in output:
        schema = output["schema"]
        name = output.get("name") or schema.get("title") or "output"
        description = output.get("description") or ""
        if isinstance(output.get("strict"), bool):
            strict = output["strict"]
    else:
        schema = output
        name = schema.get("title") or "output"
        description = schema.get("description") if isinstance(schema.get("description"), str) else ""
    if not isinstance(name, str):
        name = "output"
    return schema, _NAME_CHARS.sub("_", name)[:64] or "output", description or "", strict


def _root_inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A recursive model's schema is `{"$ref": "#/$defs/X", "$defs": ...}`: the root becomes X
    itself (its inner `$ref`s still resolve), so an object stays an object."""
    ref, defs = schema.get("$ref"), schema.get("$defs")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and isinstance(defs, dict) and len(schema) == 2:
        target = defs.get(ref[len("#/$defs/"):])
        if isinstance(target, dict) and "$ref" not in target:
            return {**target, "$defs": defs}
    return schema


def _wrap(schema: dict[str, Any], key: str) -> dict[str, Any]:
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    out: dict[str, Any] = {"type": "object", "properties": {key: inner}, "required": [key], "additionalProperties": False}
    if "$defs" in schema:
        out["$defs"] = schema["$defs"]
    return out


class _NotStrict(Exception):
    pass


_NOT_STRICT_KEYS = frozenset({"patternProperties", "if", "then", "else", "not", "dependentRequired",
                              "dependentSchemas", "unevaluatedProperties", "propertyNames"})
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _strict_copy(schema: dict[str, Any], *, fix: bool) -> dict[str, Any] | None:
    """The schema in OpenAI's strict form (every object closed, every property required), or
    None when it cannot be. `fix=False`: only check (a caller's schema is sent as given)."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if _NOT_STRICT_KEYS & node.keys():
            raise _NotStrict
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: walk(sub) for name, sub in v.items()}
            elif k == "$defs" and isinstance(v, dict):
                out[k] = {name: walk(sub) for name, sub in v.items()}
            elif k in _SUBSCHEMA_LISTS or k in ("items", "additionalProperties"):
                out[k] = walk(v)
            elif k == "default" or k == "discriminator":
                if not fix:
                    raise _NotStrict
            else:
                out[k] = v
        if fix and "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        kind = out.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out
        if is_object:
            props = out.get("properties")
            extra = out.get("additionalProperties")
            if not isinstance(props, dict) or (extra is not None and extra is not False):
                raise _NotStrict  # a free-form dict
            if fix:
                out["additionalProperties"] = False
                out["required"] = list(props)
            elif extra is not False or sorted(out.get("required") or []) != sorted(props):
                raise _NotStrict
        return out

    try:
        return walk(schema)
    except (_NotStrict, RecursionError):
        return None


def _load(raw: str, lenient: bool) -> Any:
    """JSON text -> value; lenient: the first JSON object/array in the text, the rest ignored."""
    try:
        if not lenient:
            return json.loads(raw)
        m = re.search(r"[\[{]", raw)
        if m is None:
            raise ValueError("no JSON object or array in the answer")
        value, _ = json.JSONDecoder().raw_decode(raw, m.start())
        return value
    except ValueError as exc:  # json.JSONDecodeError is one
        msg = "the answer is empty" if not raw.strip() else f"the answer is not valid JSON: {exc}"
        raise _Invalid([{"type": "json_invalid", "loc": (), "msg": msg}]) from None


