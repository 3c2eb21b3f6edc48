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
tool loop stops at a turn that calls one, see `llmrelay.engine.plan.tool_loop`).

pydantic is imported when the first tool is defined, not by `import llmrelay`.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Generic, overload

from ..events import ToolResult
from ..messages import ToolCall
from .schema import _arguments_model, _parse_docstring, _tidy_schema, schema_errors

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, TypeVar

    #: A tool keeps its function's signature: `Tool[P, R]` is called like the function
    #: (`Tool[..., Any]` for a tool built from a schema).
    P = ParamSpec("P", default=...)
    R = TypeVar("R", default=Any)
else:
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# -- the Tool ----------------------------------------------------------------------
class Tool(Generic[P, R]):
    """A callable tool: name, description, JSON-schema parameters, and the function (or None).

    Build one with `@llmrelay.tool` / `Tool.from_function(fn)`, or directly from
    a schema (`Tool(name, description, parameters)`: the caller runs it).
    """

    def __init__(
        self,
        name: str,
        description: str = "",
        parameters: dict[str, Any] | None = None,
        fn: Callable[P, R] | None = None,
        *,
        strict: bool = False,
        validator: Any = None,
    ):
        from ..errors import InvalidRequestError

        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestError(f"tool name {name!r} must be 1-64 characters of letters, digits, _ . -")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequestError(f"tool {name!r}: parameters must be a JSON schema dict, got {type(parameters).__name__}")
        if parameters is not None:
            _check_schema(name, parameters)
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

    @staticmethod
    def from_function(
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: dict[str, Any] | None = None,
        strict: bool = False,
    ) -> Tool[P, R]:
        """A tool from a sync or async function; see the module docstring for the schema."""
        from ..errors import InvalidRequestError

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
        tool = Tool(name, description if description is not None else summary, schema, fn, strict=strict, validator=validator)
        tool._fields = fields
        tool._positional, tool._defaults = _signature_facts(fn)
        return tool

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
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
        fn: Callable[..., Any] | None = self.fn
        if fn is None:
            raise TypeError(f"tool {self.name!r} has no function")
        if self._positional:
            kwargs = dict(kwargs)
            args = [kwargs.pop(p) for p in self._positional if p in kwargs]
            return fn(*args, **kwargs)
        return fn(**kwargs)


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


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(*, name: str | None = None, description: str | None = None, schema: dict[str, Any] | None = None,
         strict: bool = False) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    strict: bool = False,
) -> Any:
    """Decorator: turn a function (sync or async) into a `Tool` that keeps its signature
    (`Tool[P, R]`: calling it calls the function). Usable bare or with options."""

    def wrap(f: Callable[..., Any]) -> Tool[..., Any]:
        return Tool.from_function(f, name=name, description=description, schema=schema, strict=strict)

    return wrap(fn) if fn is not None else wrap


def _check_schema(name: str, schema: dict[str, Any]) -> None:
    """A tool's parameters must be a JSON-schema object: checked before anything is sent."""
    from ..errors import InvalidRequestError

    where = f"tool {name!r}: parameters"
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(f"{where} must be a JSON schema of type 'object', got type {schema.get('type')!r}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise InvalidRequestError(f"{where}.properties must be a dict of JSON schemas, got {type(props).__name__}")
    for key, sub in props.items():
        if not isinstance(key, str) or not isinstance(sub, (dict, bool)):
            raise InvalidRequestError(f"{where}.properties[{key!r}] must be a JSON schema (a dict), got {type(sub).__name__}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise InvalidRequestError(f"{where}.required must be a list of property names, got {required!r}")
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{where} must be strict JSON: {exc}") from None


def as_tools(tools: Any) -> dict[str, Tool[..., Any]]:
    """Normalize `tools=[...]` (Tool objects, plain functions, or schema dicts) to a name -> Tool map."""
    from ..errors import InvalidRequestError

    if tools is None:
        return {}
    if isinstance(tools, (Tool, dict)) or callable(tools):
        tools = [tools]
    if isinstance(tools, (str, bytes)) or not hasattr(tools, "__iter__"):
        raise InvalidRequestError(f"tools must be a list of tools, functions or schema dicts, got {type(tools).__name__}")
    out: dict[str, Tool[..., Any]] = {}
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
            items: Any = errors(include_url=False)
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


