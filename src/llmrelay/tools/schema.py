"""JSON schemas for tools: from a function's signature and docstring, and a small
checker for schemas given explicitly. Used by `llmrelay.tools`.

Docstrings: Google (`Args:`), Sphinx (`:param x:`) and NumPy (`Parameters` +
rule) styles; the summary becomes the description, parameter lines the
property descriptions. pydantic builds the schema (imported on first use).
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

# -- docstrings -------------------------------------------------------------------
_PARAM_SECTIONS = frozenset({"args", "arguments", "parameters", "params", "keyword args", "keyword arguments", "other parameters"})
_SECTIONS = _PARAM_SECTIONS | frozenset({
    "returns", "return", "raises", "raise", "yields", "yield", "examples", "example", "notes", "note",
    "see also", "warnings", "warning", "references", "attributes", "todo",
})
_GOOGLE_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
#: `name: text`, `name (int): text`, `*args: text`
_GOOGLE_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:(?:\s+(.*))?$")
#: `:param name: text`, `:param int name: text`, `:parameter x:`, `:arg x:`, `:key x:`
_SPHINX_PARAM = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*?\s+)?(\*{0,2}\w+)\s*:(?:\s+(.*))?$")
#: `name : type` (NumPy), or a bare `name`
_NUMPY_PARAM = re.compile(r"^(\*{0,2}\w+)(?:\s*:\s*.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google, Sphinx or NumPy docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, list[str]] = {}
    section: str | None = None  # None: the description; else the lower-case section name
    numpy = False  # the section is NumPy style (`name : type`, text on the lines below)
    param_indent: int | None = None  # indentation of the parameter lines of this section
    last: str | None = None  # the parameter a continuation line belongs to
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        # a NumPy section: a title, then a line of dashes
        if stripped and _NUMPY_RULE.match(nxt) and stripped.lower() in _SECTIONS:
            section, param_indent, last, numpy = stripped.lower(), None, None, True
            i += 2
            continue
        m = _GOOGLE_HEADER.match(line)
        if m and m.group(1).lower() in _SECTIONS:
            section, param_indent, last, numpy = m.group(1).lower(), None, None, False
            i += 1
            continue
        i += 1
        sphinx = _SPHINX_PARAM.match(stripped)
        if sphinx:
            name = sphinx.group(1).lstrip("*")
            section, last = ":sphinx", name
            params[name] = [sphinx.group(2) or ""]
            continue
        if stripped.startswith(":"):  # :type x:, :returns:, :raises ...: end any sphinx parameter
            section, last = (":other" if section in (None, ":sphinx", ":other") else section), None
            continue
        if section is None:
            summary.append(line)
            continue
        if section == ":sphinx":
            if last and stripped:
                params[last].append(stripped)
            elif not stripped:
                last = None
            continue
        if section not in _PARAM_SECTIONS:
            continue
        if not stripped:
            continue
        indent = _indent(line)
        if param_indent is None or indent <= param_indent:
            pm = (_NUMPY_PARAM if numpy else _GOOGLE_PARAM).match(stripped)
            if pm:
                param_indent = indent
                name = pm.group(1).lstrip("*")
                last = name
                text = None if numpy else pm.group(2)
                params[name] = [text] if text else []
                continue
        if last is not None:
            params[last].append(stripped)
    description = "\n".join(summary).strip()
    return description, {k: " ".join(v).strip() for k, v in params.items() if any(v)}


def _annotations(fn: Any) -> dict[str, Any]:
    """The parameter annotations, each string one evaluated on its own (one that cannot be
    resolved, e.g. a class local to a function under `from __future__ import annotations`,
    becomes `Any` without spoiling the others)."""
    import functools

    while isinstance(fn, functools.partial):
        fn = fn.func
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)
    target = getattr(target, "__func__", target)
    try:
        raw = inspect.get_annotations(target)
    except Exception:
        raw = dict(getattr(target, "__annotations__", None) or {})
    unwrapped = inspect.unwrap(target) if callable(target) else target
    namespace = dict(getattr(unwrapped, "__globals__", {}) or {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            try:
                value = eval(value, namespace)  # noqa: S307 - the function's own annotation text
            except Exception:
                value = Any
        out[key] = value
    return out


def _arguments_model(fn: Callable[..., Any], name: str, docs: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """A pydantic model of the function's parameters, and parameter name -> field name.

    Fields get neutral names (`p0`, `p1`…) with the parameter name as alias, so
    any parameter name works (`_private`, `json`, `model_config`…) and the
    schema and validation errors speak the parameter names."""
    from pydantic import ConfigDict, Field, create_model

    from ..errors import InvalidRequestError

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"tool {name!r}: cannot read the signature of {fn!r}: {exc}") from None
    hints = _annotations(fn)
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, param.annotation if param.annotation is not param.empty else Any)
        if isinstance(annotation, str):  # an annotation that could not be resolved
            annotation = Any
        field_name = f"p{i}"
        names[pname] = field_name
        kw: dict[str, Any] = {"alias": pname}
        if docs.get(pname):
            kw["description"] = docs[pname]
        if param.default is param.empty:
            fields[field_name] = (annotation, Field(**kw))
        else:
            fields[field_name] = (annotation, Field(param.default, **kw))
    try:
        model = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
        model.model_json_schema()  # a type with no JSON schema fails here, at definition
    except Exception as exc:
        raise InvalidRequestError(f"tool {name!r}: cannot build a JSON schema from the signature: {exc}") from None
    return model, names


def _tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema made portable: `$ref`s inlined and the generated `title`s dropped
    (property names stay, even one called "title"). A recursive model keeps its `$defs`."""
    defs = schema.get("$defs") or {}

    class _Recursive(Exception):
        pass

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            key = ref[len("#/$defs/"):] if ref.startswith("#/$defs/") else None
            if key is None or key in stack or key not in defs:
                raise _Recursive
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**walk(defs[key], (*stack, key)), **walk(rest, stack)}
        out: dict[str, Any] = {}
        for k, v in node.items():
            if (k == "title" and isinstance(v, str)) or k == "$defs":
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: walk(sub, stack) for name, sub in v.items()}
            else:
                out[k] = walk(v, stack)
        return out

    try:
        return walk(schema, ())
    except _Recursive:
        return _strip_titles(schema)


def _strip_titles(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_titles(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "title" and isinstance(v, str):
            continue
        if k == "properties" and isinstance(v, dict):
            out[k] = {name: _strip_titles(sub) for name, sub in v.items()}
        else:
            out[k] = _strip_titles(v)
    return out


# -- a small JSON-schema check (explicit schemas) -------------------------------------
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: Any, path: str = "") -> list[str]:
    """Where `value` does not match `schema` (a practical subset of JSON Schema); [] if it does."""
    if not isinstance(schema, dict):
        return []
    where = path or "arguments"
    out: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        known = [k for k in kinds if k in _TYPES]
        if known and not any(_TYPES[k](value) for k in known):
            return [f"{where}: expected {' or '.join(known)}, got {type(value).__name__}"]
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        out.append(f"{where}: must be one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: must be {schema['const']!r}")
    if isinstance(value, dict):
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        for req in schema.get("required") or ():
            if req not in value:
                out.append(f"{path + '.' if path else ''}{req}: missing (required)")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in props:
                out.extend(schema_errors(item, props[key], sub))
            elif extra is False:
                out.append(f"{sub}: unexpected argument")
            elif isinstance(extra, dict):
                out.extend(schema_errors(item, extra, sub))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for j, item in enumerate(value):
            out.extend(schema_errors(item, schema["items"], f"{where}[{j}]"))
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and not any(not schema_errors(value, o, path) for o in options):
            out.append(f"{where}: matches none of the allowed forms")
    for sub in schema.get("allOf") or ():
        out.extend(schema_errors(value, sub, path))
    return out
