"""Tool definitions: schema from hints and docstrings, validation of the model's arguments,
dict definitions, names, tool_choice. No network: `prepare` only encodes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import re
import subprocess
import sys
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field, ValidationError

import llmrelay
from llmrelay import InvalidRequestError, Tool, ToolCall
from llmrelay.client import Client
from llmrelay.testing import request_for
from llmrelay.tools import _parse_docstring, as_tools, check_call, result_of, schema_errors, serialize_result


def keyed() -> Client:
    return Client(api_keys={p: "k" for p in llmrelay.PROVIDERS}, env={})


def props(t: Tool) -> dict[str, Any]:
    return t.parameters["properties"]


# -- schema from type hints -------------------------------------------------------------
def test_multiply_schema_is_the_recorded_one_plus_additional_properties_false():
    @llmrelay.tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    recorded = request_for("openai_chat/tool_call_then_usage.sse")["tools"][0]["function"]
    assert isinstance(multiply, Tool)
    assert multiply.name == recorded["name"] == "multiply"
    assert multiply.description == recorded["description"]
    # arguments the function does not take are rejected, and the schema says so
    assert multiply.parameters == {**recorded["parameters"], "additionalProperties": False}
    assert multiply(3, 4) == 12  # the decorated function stays callable


def test_defaults_and_optional_parameters():
    @llmrelay.tool
    def search(query: str, limit: int = 10, lang: Optional[str] = None, exact: bool = False) -> list:
        """Search."""
        return []

    p = props(search)
    assert search.parameters["required"] == ["query"]
    assert p["query"] == {"type": "string"}
    assert p["limit"] == {"type": "integer", "default": 10}
    assert p["lang"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert p["exact"] == {"type": "boolean", "default": False}
    # an omitted optional argument keeps the function's own default (not passed at all)
    assert search.bind({"query": "q"}) == {"query": "q"}
    assert search.bind({"query": "q", "lang": None, "limit": 3}) == {"query": "q", "lang": None, "limit": 3}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_literal_and_enum():
    @llmrelay.tool
    def paint(color: Color, finish: Literal["matte", "gloss"] = "matte") -> str:
        """Paint."""
        return f"{color.value}/{finish}"

    p = props(paint)
    assert p["color"] == {"enum": ["red", "blue"], "type": "string"}  # $ref inlined, no title
    assert p["finish"] == {"enum": ["matte", "gloss"], "type": "string", "default": "matte"}
    assert "$defs" not in paint.parameters
    kwargs = paint.bind({"color": "blue"})
    assert kwargs == {"color": Color.BLUE}
    assert paint.invoke(kwargs) == "blue/matte"
    with pytest.raises(ValidationError):
        paint.bind({"color": "green"})
    with pytest.raises(ValidationError):
        paint.bind({"color": "red", "finish": "satin"})


class Address(BaseModel):
    street: str
    city: str = Field(description="City name")


class Node(BaseModel):
    name: str
    children: list["Node"] = []


def test_pydantic_model_parameters_are_inlined_and_validated_into_instances():
    @llmrelay.tool
    def ship(to: Address, weight_kg: float) -> str:
        """Ship a parcel."""
        return f"{to.city}:{weight_kg}"

    assert props(ship)["to"] == {
        "type": "object",
        "properties": {"street": {"type": "string"}, "city": {"type": "string", "description": "City name"}},
        "required": ["street", "city"],
    }
    kwargs = ship.bind({"to": {"street": "Main", "city": "Paris"}, "weight_kg": 2})
    assert isinstance(kwargs["to"], Address) and kwargs["to"].city == "Paris"
    assert ship.invoke(kwargs) == "Paris:2.0"


def test_recursive_model_keeps_defs():
    @llmrelay.tool
    def count(root: Node) -> int:
        """Count nodes."""
        return 1

    schema = count.parameters
    assert props(count)["root"] == {"$ref": "#/$defs/Node"}
    assert schema["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert "title" not in json.dumps(schema)
    kwargs = count.bind({"root": {"name": "a", "children": [{"name": "b"}]}})
    assert kwargs["root"].children[0].name == "b"


def test_annotated_field_description_and_constraints():
    @llmrelay.tool
    def pick(n: Annotated[int, Field(ge=1, le=5, description="How many")]) -> int:
        """Pick."""
        return n

    assert props(pick)["n"] == {"type": "integer", "minimum": 1, "maximum": 5, "description": "How many"}
    with pytest.raises(ValidationError):
        pick.bind({"n": 9})


def test_a_default_only_the_schema_knows_is_passed():
    @llmrelay.tool
    def tag(name: str, tags: Annotated[list[str], Field(default_factory=list)]) -> str:
        """Tag."""
        return f"{name}:{tags}"

    assert tag.parameters["required"] == ["name"]
    assert tag.bind({"name": "x"}) == {"name": "x", "tags": []}
    assert tag.invoke(tag.bind({"name": "x"})) == "x:[]"


def test_unannotated_parameters_accept_anything():
    def echo(x, y=2):
        """Echo."""
        return x

    t = Tool.from_function(echo)
    assert props(t)["x"] == {}
    assert t.parameters["required"] == ["x"]
    assert t.bind({"x": [1, "a"]}) == {"x": [1, "a"]}


def test_parameter_names_pydantic_reserves_still_work():
    def f(json: str, _private: int = 1, model_config: str = "m", schema: int = 0) -> str:
        """Odd names."""
        return f"{json}{_private}{model_config}{schema}"

    t = Tool.from_function(f)
    assert set(props(t)) == {"json", "_private", "model_config", "schema"}
    kwargs = t.bind({"json": "j", "_private": 5, "schema": 7})
    assert kwargs == {"json": "j", "_private": 5, "schema": 7}
    assert t.invoke(kwargs) == "j5m7"


def test_positional_only_parameters_are_passed_positionally():
    def f(a: int, /, b: int) -> int:
        """Difference."""
        return a - b

    t = Tool.from_function(f)
    assert t.invoke(t.bind({"a": 5, "b": 2})) == 3


def test_var_args_are_not_parameters():
    def f(a: int, *rest: int, **extra: Any) -> int:
        """Only a."""
        return a

    t = Tool.from_function(f)
    assert set(props(t)) == {"a"}


def test_bound_methods_and_callable_objects():
    class Calc:
        def add(self, a: int, b: int) -> int:
            """Add."""
            return a + b

    class Upper:
        __name__ = "upper"

        def __call__(self, text: str) -> str:
            return text.upper()

    add = Tool.from_function(Calc().add)
    assert add.name == "add" and set(props(add)) == {"a", "b"}
    assert add.invoke(add.bind({"a": 1, "b": 2})) == 3
    up = Tool.from_function(Upper())
    assert up.name == "upper" and props(up) == {"text": {"type": "string"}}


def test_decorator_options_and_strict():
    @llmrelay.tool(name="get-time", description="Now, in UTC.", strict=True)
    def now() -> str:
        """Ignored."""
        return "12:00"

    assert (now.name, now.description, now.strict) == ("get-time", "Now, in UTC.", True)
    assert now.parameters == {"type": "object", "properties": {}, "additionalProperties": False}


class Opaque:
    pass


def test_a_type_without_a_json_schema_fails_at_definition():
    def f(x: Opaque) -> None:
        """No schema for Opaque."""

    with pytest.raises(InvalidRequestError, match="cannot build a JSON schema"):
        Tool.from_function(f)


def test_an_annotation_that_cannot_be_resolved_is_any_and_spoils_nothing_else():
    class Local(BaseModel):  # local + `from __future__ import annotations`: the string "Local" cannot be resolved
        a: int

    def f(x: Local, n: int) -> None:
        """Local class."""

    t = Tool.from_function(f)
    assert props(t) == {"x": {}, "n": {"type": "integer"}}
    assert t.bind({"x": {"a": 1}, "n": "2"}) == {"x": {"a": 1}, "n": 2}


def test_a_function_without_a_name_needs_one():
    import functools

    def base(a: int, b: int) -> int:
        return a + b

    part = functools.partial(base, b=1)
    with pytest.raises(InvalidRequestError, match="name="):
        Tool.from_function(part)
    t = Tool.from_function(part, name="inc")
    assert t.invoke(t.bind({"a": 1})) == 2


# -- docstrings ---------------------------------------------------------------------------
def test_google_docstring_descriptions_land_in_the_schema():
    @llmrelay.tool
    def weather(city: str, units: Literal["c", "f"] = "c", days: int = 1) -> str:
        """Current weather for a city.

        Uses the national service.

        Args:
            city: City name,
                e.g. "Paris: France".
            units (str): Temperature units.
            days: How many days: 1 to 7.

        Returns:
            str: the forecast.

        Raises:
            ValueError: never.
        """
        return ""

    assert weather.description == "Current weather for a city.\n\nUses the national service."
    p = props(weather)
    assert p["city"]["description"] == 'City name, e.g. "Paris: France".'
    assert p["units"]["description"] == "Temperature units."
    assert p["days"]["description"] == "How many days: 1 to 7."


def test_sphinx_docstring():
    def f(a: str, b: int) -> None:
        """Do a thing.

        :param str a: the first,
            continued here.
        :type a: str
        :param b: the second
        :returns: nothing
        :raises ValueError: never
        """

    t = Tool.from_function(f)
    assert t.description == "Do a thing."
    assert props(t)["a"]["description"] == "the first, continued here."
    assert props(t)["b"]["description"] == "the second"


def test_numpy_docstring():
    assert _parse_docstring(
        """Summary line.

        Parameters
        ----------
        a : int
            The a.
        b : str, optional
            The b,
            on two lines.

        Returns
        -------
        int
            Something.
        """
    ) == ("Summary line.", {"a": "The a.", "b": "The b, on two lines."})


def test_docstring_without_sections_is_the_description():
    assert _parse_docstring("  One line.  ") == ("One line.", {})
    assert _parse_docstring(None) == ("", {})


def test_explicit_description_wins_and_no_docstring_is_empty():
    def f(x: int) -> int:
        return x

    assert Tool.from_function(f).description == ""
    assert Tool.from_function(f, description="Given.").description == "Given."


# -- async functions ----------------------------------------------------------------------
def test_async_functions_are_async_tools():
    @llmrelay.tool
    async def fetch(url: str) -> str:
        """Fetch a URL.

        Args:
            url: The address.
        """
        await asyncio.sleep(0)
        return url.upper()

    assert fetch.is_async
    assert props(fetch)["url"] == {"type": "string", "description": "The address."}
    assert asyncio.run(fetch.invoke(fetch.bind({"url": "x"}))) == "X"

    class Obj:
        __name__ = "obj"

        async def __call__(self, q: str) -> str:
            return q

    assert Tool.from_function(Obj()).is_async
    assert not Tool.from_function(lambda q: q, name="sync_lambda").is_async


# -- explicit schema ------------------------------------------------------------------------
def test_explicit_schema_replaces_the_generated_one_and_is_checked():
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string"}, "n": {"type": "integer", "enum": [1, 2]}},
        "required": ["q"],
        "additionalProperties": False,
    }

    @llmrelay.tool(schema=schema)
    def lookup(**kwargs: Any) -> dict:
        """Look up."""
        return kwargs

    assert lookup.parameters is schema and lookup.description == "Look up."
    assert lookup.bind({"q": "x", "n": 2}) == {"q": "x", "n": 2}  # passed as they are
    for bad, why in [
        ({}, "q: missing (required)"),
        ({"q": 1}, "q: expected string, got int"),
        ({"q": "x", "n": 3}, "n: must be one of [1, 2]"),
        ({"q": "x", "zzz": 1}, "zzz: unexpected argument"),
    ]:
        with pytest.raises(ValueError, match=re.escape(why)):
            lookup.bind(bad)


def test_schema_errors_subset():
    s = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "v": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "k": {"const": "x"},
        "o": {"type": "object", "additionalProperties": {"type": "number"}},
    }}
    assert schema_errors({"tags": ["a"], "v": None, "k": "x", "o": {"a": 1.5}}, s) == []
    assert schema_errors({"tags": ["a", 2]}, s) == ["tags[1]: expected string, got int"]
    assert schema_errors({"v": "s"}, s) == ["v: matches none of the allowed forms"]
    assert schema_errors({"k": "y"}, s) == ["k: must be 'x'"]
    assert schema_errors({"o": {"a": "s"}}, s) == ["o.a: expected number, got str"]
    assert schema_errors(True, {"type": "integer"}) == ["arguments: expected integer, got bool"]
    assert schema_errors(2.0, {"type": "integer"}) == []


# -- dict definitions, names, duplicates ------------------------------------------------------
PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.mark.parametrize("definition", [
    {"name": "weather", "description": "W.", "parameters": PARAMS},
    {"type": "function", "function": {"name": "weather", "description": "W.", "parameters": PARAMS}},
    {"type": "function", "name": "weather", "description": "W.", "parameters": PARAMS},  # Responses shape
    {"name": "weather", "description": "W.", "input_schema": PARAMS},  # Anthropic shape
    {"name": "weather", "description": "W.", "parametersJsonSchema": PARAMS},  # Gemini shape
])
def test_dict_tool_definitions(definition):
    (t,) = as_tools([definition]).values()
    assert (t.name, t.description, t.parameters, t.fn) == ("weather", "W.", PARAMS, None)
    _, request, _, _ = keyed().prepare("openai:gpt-4o", "Hi", tools=[definition])
    assert request.json["tools"] == [{"type": "function", "function": {"name": "weather", "description": "W.", "parameters": PARAMS}}]


def test_dict_without_parameters_gets_an_empty_object_schema():
    (t,) = as_tools({"name": "ping"}).values()
    assert t.parameters == {"type": "object", "properties": {}} and t.description == ""


def test_mixed_tools_list():
    def plain(x: int) -> int:
        """Plain function."""
        return x

    @llmrelay.tool
    def decorated() -> None:
        """Decorated."""

    tools = as_tools([plain, decorated, {"name": "schema_only"}])
    assert list(tools) == ["plain", "decorated", "schema_only"]
    assert tools["plain"].fn is plain and tools["schema_only"].fn is None
    assert as_tools(None) == {} and list(as_tools(plain)) == ["plain"]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "é", "a/b", None, 3])
def test_invalid_names(bad):
    with pytest.raises(InvalidRequestError, match="tool name"):
        Tool(bad)  # type: ignore[arg-type]


def test_lambda_name_is_invalid_but_a_name_fixes_it():
    with pytest.raises(InvalidRequestError, match="<lambda>"):
        Tool.from_function(lambda: 1)
    assert Tool.from_function(lambda: 1, name="one").name == "one"


@pytest.mark.parametrize("bad, match", [
    ([{"description": "no name"}], "needs a 'name'"),
    ([{"function": "nope"}], "'function' must be a dict"),
    ([{"name": "a", "parameters": "nope"}], "parameters must be a JSON schema dict"),
    ([42], r"tools\[0\] must be a Tool"),
    ("weather", "tools must be a list"),
])
def test_bad_definitions(bad, match):
    with pytest.raises(InvalidRequestError, match=match):
        as_tools(bad)


def test_duplicate_tools():
    def a() -> None:
        """A."""

    with pytest.raises(InvalidRequestError, match="two tools are named 'a'"):
        as_tools([a, {"name": "a"}])
    with pytest.raises(InvalidRequestError, match="two tools are named"):
        keyed().prepare("openai:gpt-4o", "Hi", tools=[a, a])


# -- tool_choice ---------------------------------------------------------------------------------
def test_tool_choice_validation():
    tools = [{"name": "get_time"}]
    for choice in ("auto", "none", "required", "get_time"):
        keyed().prepare("openai:gpt-4o", "Hi", tools=tools, tool_choice=choice)
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        keyed().prepare("openai:gpt-4o", "Hi", tools=tools, tool_choice="get_weather")
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        keyed().prepare("openai:gpt-4o", "Hi", tool_choice="get_time")  # no tools at all


# -- checking a call ---------------------------------------------------------------------------
def _call(name: str, arguments: Any, error: str | None = None) -> ToolCall:
    return ToolCall("c1", name, arguments, json.dumps(arguments) if arguments is not None else "{", error)


def test_bind_validation_errors():
    @llmrelay.tool
    def area(w: int, h: int = 1) -> int:
        """Area."""
        return w * h

    with pytest.raises(ValidationError):
        area.bind({})  # missing
    with pytest.raises(ValidationError):
        area.bind({"w": "wide"})  # wrong type
    with pytest.raises(ValidationError):
        area.bind({"w": 1, "depth": 2})  # not a parameter
    with pytest.raises(ValueError):
        area.bind(["w"])  # type: ignore[arg-type]
    assert area.bind({"w": "3"}) == {"w": 3}  # lax: pydantic's usual conversions

    tools = {"area": area}
    assert check_call(_call("area", {"w": 2, "h": 3}), tools) == (area, {"w": 2, "h": 3}, None)
    _, _, err = check_call(_call("area", {"w": "wide", "depth": 2}), tools)
    assert err.startswith("Error: invalid arguments for area: ")
    assert "w: Input should be a valid integer" in err and "depth: Extra inputs are not permitted" in err
    assert "errors.pydantic.dev" not in err  # short, for the model
    _, _, err = check_call(_call("area", None, "arguments are not valid JSON: Expecting value"), tools)
    assert err == "Error: invalid arguments for area: arguments are not valid JSON: Expecting value"
    assert check_call(_call("volume", {}), tools) == (None, None, "Error: unknown tool 'volume'. Available tools: area.")
    assert check_call(_call("x", {}), {})[2] == "Error: unknown tool 'x'. Available tools: none."
    t = Tool("schema_only")
    assert check_call(_call("schema_only", {}), {"schema_only": t}) == (t, None, "Error: tool 'schema_only' has no function to run.")


def test_result_of_values_and_errors():
    call = _call("f", {})
    ok = result_of(call, 2, {"a": 1})
    assert (ok.call_id, ok.name, ok.value, ok.content, ok.error, ok.index, ok.ok) == ("c1", "f", {"a": 1}, '{"a": 1}', None, 2, True)
    bad = result_of(call, 0, error=ValueError("boom"))
    assert (bad.value, bad.content, bad.error, bad.ok) == (None, "Error: ValueError: boom", "Error: ValueError: boom", False)


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_serialize_result():
    assert serialize_result("plain text") == "plain text"
    assert serialize_result(2869461) == "2869461"
    assert serialize_result(None) == "null"
    assert serialize_result({"é": [1, 2.5, True]}) == '{"é": [1, 2.5, true]}'
    assert serialize_result(Address(street="Main", city="Paris")) == '{"street": "Main", "city": "Paris"}'
    assert serialize_result([Point(1, 2)]) == '[{"x": 1, "y": 2}]'
    assert serialize_result(dt.date(2024, 1, 2)) == '"2024-01-02"'
    assert serialize_result(Color.RED) == '"red"'

    class Weird:
        def __str__(self) -> str:
            return "weird"

    assert serialize_result(Weird()) == "weird"


def test_import_llmrelay_does_not_import_pydantic():
    code = "import sys, llmrelay; assert 'pydantic' not in sys.modules; llmrelay.tool(lambda: 1, name='one'); assert 'pydantic' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
