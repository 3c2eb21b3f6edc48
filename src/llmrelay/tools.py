"""Tools: Python functions the model can call.

    @llmrelay.tool
    def get_weather(city: str, units: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.

        Args:
            city: City name, e.g. "Paris".
            units: Temperature units.
        '''

The JSON schema comes from the type hints (through pydantic: `Literal`, enums,
`Optional`, defaults, pydantic models, `Annotated[..., Field(...)]` all work)
and the docstring: the text before the first section is the description, and
parameter descriptions come from a Google-style `Args:` section, Sphinx
`:param [type] name:` lines or a NumPy-style `Parameters` section. Arguments
the model sends are validated (and converted: a pydantic-model parameter gets a
model instance) by the same pydantic model before the function runs, so a bad
call becomes a tool error sent back to the model, never a crash and never a
silent drop.

An explicit `schema=` replaces the generated one. The model's arguments are
then checked against that schema (types, `required`, `enum`/`const`,
`additionalProperties`, `items`, `anyOf`/`oneOf`/`allOf`; `$ref` is not
followed) and passed to the function as they are, without conversion.

A tool given as a schema dict (`{"name", "description", "parameters"}`, or the
OpenAI `{"type": "function", "function": {...}}` / Anthropic `input_schema`
shapes) has no function: the model may call it, and the caller runs it (the
tool loop stops at a turn that calls one, see `llmrelay.plan.tool_loop`).

pydantic is imported when the first tool is defined, not by `import llmrelay`.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from typing import Any, Callable

from .events import ToolResult
from .messages import ToolCall

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

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
            section, last = ":sphinx", sphinx.group(1).lstrip("*")
            params[last] = [sphinx.group(2) or ""]
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
                last = pm.group(1).lstrip("*")
                text = None if numpy else pm.group(2)
                params[last] = [text] if text else []
                continue
        if last is not None:
            params[last].append(stripped)
    description = "\n".join(summary).strip()
    return description, {k: " ".join(v).strip() for k, v in params.items() if any(v)}


# -- the Tool ----------------------------------------------------------------------
class Tool:
    """A callable tool: name, description, JSON-schema parameters, and the function (or None).

    Build one with `@llmrelay.tool` / `Tool.from_function(fn)`, or directly from
    a schema (`Tool(name, description, parameters)`: the caller runs it).
    """

    def __init__(
        self,
        name: str,
        description: str = "",
        parameters: dict[str, Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        strict: bool = False,
        validator: Any = None,
    ):
        from .errors import InvalidRequestError

        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestError(f"tool name {name!r} must be 1-64 characters of letters, digits, _ . -")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequestError(f"tool {name!r}: parameters must be a JSON schema dict, got {type(parameters).__name__}")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise InvalidRequestError(f"tool {name!r}: description must be a string, got {type(description).__name__}")
        if fn is not None and not callable(fn):
            raise InvalidRequestError(f"tool {name!r}: fn must be callable, got {type(fn).__name__}")
        self.name = name
        self.description = description
        self.parameters = parameters if parameters is not None else {"type": "object", "properties": {}}
        self.fn = fn
        self.strict = strict
        #: A pydantic model built from the signature (None with an explicit schema).
        self._validator = validator
        #: parameter name -> field name in the validator (they differ for names pydantic reserves)
        self._fields: dict[str, str] = {}
        #: positional-only parameters, in order (passed positionally)
        self._positional: tuple[str, ...] = ()
        #: parameters with a default in the function's signature
        self._defaults: frozenset[str] = frozenset()
        self.is_async = fn is not None and _is_async(fn)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: dict[str, Any] | None = None,
        strict: bool = False,
    ) -> Tool:
        """A tool from a sync or async function; see the module docstring for the schema."""
        from .errors import InvalidRequestError

        if not callable(fn):
            raise InvalidRequestError(f"a tool needs a function, got {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None)
            if name is None:
                raise InvalidRequestError(f"{fn!r} has no __name__: pass name=...")
        summary, param_docs = _parse_docstring(getattr(fn, "__doc__", None))
        validator = None
        fields: dict[str, str] = {}
        if schema is None:
            validator, fields = _arguments_model(fn, name, param_docs)
            schema = _tidy_schema(validator.model_json_schema())
        tool = cls(name, description if description is not None else summary, schema, fn, strict=strict, validator=validator)
        tool._fields = fields
        tool._positional, tool._defaults = _signature_facts(fn)
        return tool

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (the decorated function stays usable)."""
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} has no function")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    # -- execution (shared by the sync and async drivers) -----------------------
    def bind(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate the model's arguments; returns the keyword arguments for the function.

        Raises `pydantic.ValidationError` (generated schema) or `ValueError`
        (explicit schema) when they do not match."""
        if not isinstance(arguments, dict):
            raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        if self._validator is None:
            problems = schema_errors(arguments, self.parameters)
            if problems:
                raise ValueError("; ".join(problems))
            return dict(arguments)
        model = self._validator.model_validate(arguments)
        set_fields = model.model_fields_set
        out: dict[str, Any] = {}
        for pname, field in self._fields.items():
            # an omitted argument keeps the function's own default (a default that only the
            # schema knows, e.g. `Annotated[list, Field(default_factory=list)]`, is passed)
            if field in set_fields or pname not in self._defaults:
                out[pname] = getattr(model, field)
        return out

    def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Run the function with bound arguments (a coroutine for an async tool)."""
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} has no function")
        if self._positional:
            kwargs = dict(kwargs)
            args = [kwargs.pop(p) for p in self._positional if p in kwargs]
            return self.fn(*args, **kwargs)
        return self.fn(**kwargs)


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # a callable object with `async def __call__`
    return call is not None and not inspect.isfunction(fn) and not inspect.ismethod(fn) and inspect.iscoroutinefunction(call)


def _signature_facts(fn: Callable[..., Any]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(positional-only parameters in order, parameters with a default)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return (), frozenset()
    params = sig.parameters.items()
    return (tuple(n for n, p in params if p.kind is p.POSITIONAL_ONLY),
            frozenset(n for n, p in params if p.default is not p.empty))


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

    from .errors import InvalidRequestError

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
        model = create_model(  # type: ignore[call-overload]
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


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    strict: bool = False,
) -> Any:
    """Decorator: turn a function (sync or async) into a `Tool`. Usable bare or with options."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description, schema=schema, strict=strict)

    return wrap(fn) if fn is not None else wrap


def as_tools(tools: Any) -> dict[str, Tool]:
    """Normalize `tools=[...]` (Tool objects, plain functions, or schema dicts) to a name -> Tool map."""
    from .errors import InvalidRequestError

    if tools is None:
        return {}
    if isinstance(tools, (Tool, dict)) or callable(tools):
        tools = [tools]
    if isinstance(tools, (str, bytes)) or not hasattr(tools, "__iter__"):
        raise InvalidRequestError(f"tools must be a list of tools, functions or schema dicts, got {type(tools).__name__}")
    out: dict[str, Tool] = {}
    for i, t in enumerate(tools):
        if isinstance(t, Tool):
            pass
        elif isinstance(t, dict):
            fn = t.get("function", t)
            if not isinstance(fn, dict):
                raise InvalidRequestError(f"tools[{i}]: 'function' must be a dict, got {type(fn).__name__}")
            if not fn.get("name"):
                raise InvalidRequestError(f"tools[{i}]: a tool definition needs a 'name'")
            params = next((fn[k] for k in ("parameters", "input_schema", "parametersJsonSchema", "parameters_json_schema")
                           if fn.get(k) is not None), None)
            t = Tool(fn["name"], fn.get("description") or "", params, strict=bool(fn.get("strict")))
        elif callable(t):
            t = Tool.from_function(t)
        else:
            raise InvalidRequestError(f"tools[{i}] must be a Tool, a function or a schema dict, got {type(t).__name__}")
        if t.name in out:
            raise InvalidRequestError(f"two tools are named {t.name!r}")
        out[t.name] = t
    return out


# -- checking a call, reporting its result ----------------------------------------------
def serialize_result(value: Any) -> str:
    """The text sent to the model: a str as it is, anything else as JSON (pydantic models,
    dataclasses, datetimes, enums, sets… included), `str(value)` as a last resort."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        pass
    try:
        from pydantic_core import to_jsonable_python

        return json.dumps(to_jsonable_python(value), ensure_ascii=False)
    except Exception:
        return str(value)


def _validation_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            items = errors(include_url=False)
        except Exception:
            items = None
        if items:
            parts = []
            for e in items:
                loc = ".".join(str(x) for x in e.get("loc", ())) or "arguments"
                parts.append(f"{loc}: {e.get('msg')}")
            return "; ".join(parts)
    return str(exc)


def check_call(call: ToolCall, tools: dict[str, Tool]) -> tuple[Tool | None, dict[str, Any] | None, str | None]:
    """Before running a call: (tool, kwargs, None) or (tool?, None, error message for the model)."""
    t = tools.get(call.name)
    if t is None:
        known = ", ".join(sorted(tools)) or "none"
        return None, None, f"Error: unknown tool {call.name!r}. Available tools: {known}."
    if t.fn is None:
        return t, None, f"Error: tool {call.name!r} has no function to run."
    if call.arguments is None:
        return t, None, f"Error: invalid arguments for {call.name}: {call.error or 'not a JSON object'}"
    try:
        return t, t.bind(call.arguments), None
    except Exception as exc:  # pydantic.ValidationError, ValueError
        return t, None, f"Error: invalid arguments for {call.name}: {_validation_message(exc)}"


def result_of(
    call: ToolCall,
    index: int,
    value: Any = None,
    error: BaseException | str | None = None,
    started: float | None = None,
) -> ToolResult:
    duration = time.perf_counter() - started if started is not None else 0.0
    if error is not None:
        msg = error if isinstance(error, str) else f"Error: {type(error).__name__}: {error}"
        return ToolResult(call.id, call.name, None, msg, msg, duration, index)
    return ToolResult(call.id, call.name, value, serialize_result(value), None, duration, index)


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
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
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
