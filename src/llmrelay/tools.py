"""Tools: Python functions the model can call.

    @llmrelay.tool
    def get_weather(city: str, units: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.

        Args:
            city: City name, e.g. "Paris".
            units: Temperature units.
        '''

The JSON schema comes from the type hints (through pydantic) and the
docstring (summary + Google-style `Args:` or Sphinx `:param x:` lines); an
explicit `schema=` replaces it. Arguments the model sends are validated
against the same model before the function runs, so a bad call becomes a
tool error sent back to the model, never a crash and never a silent drop.

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

_PARAM_LINE = re.compile(r"^\s*(?::param\s+)?(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?)\s*:\s*$", re.I)


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    last: str | None = None
    for line in doc.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            last = None
            continue
        sphinx = line.strip().startswith(":param")
        if section is None and not sphinx:
            if line.strip().startswith(":"):
                continue
            summary_lines.append(line)
            continue
        if section in ("args", "arguments", "parameters", "params") or sphinx:
            pm = _PARAM_LINE.match(line)
            if pm and (sphinx or len(line) - len(line.lstrip()) <= 4):
                last = pm.group(1).lstrip("*")
                params[last] = pm.group(2).strip()
            elif last and line.strip():
                params[last] += " " + line.strip()
    summary = "\n".join(summary_lines).strip()
    return summary, params


class Tool:
    """A callable tool: name, description, JSON-schema parameters, and the function."""

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
        if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
            from .errors import InvalidRequestError

            raise InvalidRequestError(f"tool name {name!r} must be 1-64 characters of letters, digits, _ . -")
        self.name = name
        self.description = description
        self.parameters = parameters or {"type": "object", "properties": {}}
        self.fn = fn
        self.strict = strict
        self._validator = validator
        self.is_async = fn is not None and inspect.iscoroutinefunction(fn)

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
        summary, param_docs = _parse_docstring(fn.__doc__)
        validator = None
        if schema is None:
            validator = _arguments_model(fn, param_docs)
            schema = validator.model_json_schema()
            schema.pop("title", None)
            for prop in schema.get("properties", {}).values():
                prop.pop("title", None)
        return cls(name or fn.__name__, description if description is not None else summary, schema, fn,
                   strict=strict, validator=validator)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} has no function")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    # -- execution (shared by the sync and async drivers) -----------------------
    def bind(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate the model's arguments; returns the keyword arguments for the function."""
        if self._validator is None:
            return dict(arguments)
        model = self._validator.model_validate(arguments)
        return {name: getattr(model, name) for name in type(model).model_fields}


def _arguments_model(fn: Callable[..., Any], docs: dict[str, str]) -> Any:
    from pydantic import ConfigDict, Field, create_model

    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = getattr(fn, "__annotations__", {})
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, Any)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, Field(default, description=docs.get(pname)))
    return create_model(  # type: ignore[call-overload]
        f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields
    )


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
    out: dict[str, Tool] = {}
    for i, t in enumerate(tools):
        if isinstance(t, Tool):
            pass
        elif isinstance(t, dict):
            fn = t.get("function", t)
            if not fn.get("name"):
                raise InvalidRequestError(f"tools[{i}]: a tool definition needs a 'name'")
            t = Tool(fn["name"], fn.get("description", ""), fn.get("parameters") or fn.get("input_schema"),
                     strict=bool(fn.get("strict")))
        elif callable(t):
            t = Tool.from_function(t)
        else:
            raise InvalidRequestError(f"tools[{i}] must be a Tool, a function or a schema dict, got {type(t).__name__}")
        if t.name in out:
            raise InvalidRequestError(f"two tools are named {t.name!r}")
        out[t.name] = t
    return out


def serialize_result(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def check_call(call: ToolCall, tools: dict[str, Tool]) -> tuple[Tool | None, dict[str, Any] | None, str | None]:
    """Before running a call: (tool, kwargs, None) or (tool?, None, error message for the model)."""
    t = tools.get(call.name)
    if t is None:
        known = ", ".join(sorted(tools)) or "none"
        return None, None, f"Unknown tool {call.name!r}. Available tools: {known}."
    if t.fn is None:
        return t, None, f"Tool {call.name!r} has no function to run."
    if call.arguments is None:
        return t, None, f"Invalid arguments for {call.name}: {call.error or 'not a JSON object'}"
    try:
        return t, t.bind(call.arguments), None
    except Exception as exc:  # pydantic.ValidationError
        return t, None, f"Invalid arguments for {call.name}: {exc}"


def result_of(call: ToolCall, index: int, value: Any = None, error: BaseException | str | None = None, started: float | None = None) -> ToolResult:
    duration = time.perf_counter() - started if started is not None else 0.0
    if error is not None:
        msg = error if isinstance(error, str) else f"Error: {type(error).__name__}: {error}"
        return ToolResult(call.id, call.name, None, msg, msg, duration, index)
    return ToolResult(call.id, call.name, value, serialize_result(value), None, duration, index)
