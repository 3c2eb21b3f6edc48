"""Structured output: `output=` gives a validated object from every provider, and partial
objects while the stream is still running.

    class Weather(BaseModel):
        city: str
        temperature: float

    r = llmrelay.complete("openai:gpt-4o", "Weather in Paris?", output=Weather)
    r.output                      # Weather(city='Paris', temperature=18.0)

    with llmrelay.stream("anthropic:claude-sonnet-4-5", "...", output=Weather) as s:
        for p in s.partial_stream:
            print(p.value)        # {'city': 'Par'}, {'city': 'Paris'}, {'city': 'Paris', 'temperature': 18.0}
        s.response.output         # Weather(...)

`output` is a pydantic model, a dataclass, a TypedDict, any type pydantic can
validate (`list[Item]`, `int`, `Literal[...]`...), or a JSON schema dict (also the
OpenAI `{"name", "schema", "strict"}` shape). Types are validated by a pydantic
`TypeAdapter` (in JSON mode, like the provider's JSON), schema dicts by
`llmrelay.tools.schema_errors`. pydantic is imported only when `output=` is used.

How each provider is asked (`Provider.structured`, a profile field; a mechanism
the protocol lacks falls back along json_schema -> json_object -> tool -> prompt):

| provider (protocol)                 | structured  | request                                                       |
|-------------------------------------|-------------|---------------------------------------------------------------|
| openai, OpenAI-compatibles (chat)   | json_schema | `response_format: {type: json_schema, json_schema: {name, schema, strict}}` |
| groq, deepseek (chat)               | json_object | `response_format: {type: json_object}` + schema in a system message |
| openai-responses                    | json_schema | `text: {format: {type: json_schema, name, schema, strict}}`   |
| anthropic                           | tool        | an output tool + `tool_choice: {type: tool, name}`; the JSON streams as its `input_json_delta` |
| gemini                              | json_schema | `generationConfig: {responseMimeType: application/json, responseJsonSchema}` |
| ollama                              | json_schema | `format: <schema>` (`"json"` for json_object)                  |
| cohere (v2)                         | json_schema | `response_format: {type: json_object, json_schema}`           |
| cohere-v1                           | json_schema | `response_format: {type: json_object, schema}`                |

- `strict` is true when the schema can be made strict: a schema built from a
  type gets `additionalProperties: false` and every property required (optional
  fields then come back as null or their default), `default` dropped, `oneOf` as
  `anyOf`; a free-form `dict` field makes it non-strict. A schema dict is sent
  as given, strict only if it already is.
- A root that is not an object (`list[Item]`, `int`...) is wrapped, because
  most providers want an object: `{"items": [...]}` for arrays, `{"value": ...}`
  otherwise; `output` and every partial are unwrapped.
- Tool mode: with your own tools the model must call *some* tool
  (`tool_choice` "required"), and the turn that calls the output tool is the
  final answer (its other calls are not run). With Anthropic extended thinking
  (which allows only `tool_choice` auto), the tool is offered and the model is
  told to call it. The output tool's events reach you as `TextDelta`s of the
  JSON (so `text_stream` and `response.text` are the JSON on every provider).
- "prompt" mode reads the JSON leniently (anything before the first `{`/`[` and
  after the value is ignored: prose, code fences); the other modes strictly.

Streams: besides the usual events, `PartialOutput(value)` after each chunk that
changes what can be read (see `llmrelay.structured.partial_json` for exactly what a partial
shows), and for `list[Item]`, `OutputItem(index, item)` once per item, validated,
when it is complete. `Stream.partial_stream` / `AsyncStream.partials` give only
the partials. At the end the whole object is validated once: `response.output`.

Failures: a refusal (OpenAI `refusal`, or a turn ended by the content filter with
no answer) raises `OutputRefusedError`; JSON that is not valid for the type
raises `OutputValidationError` (alias `StructuredOutputValidationError`) with the
raw text and the errors. `output_retries=N` asks again up to N times, sending the
errors back as a user message (a `Reset` event first: discard the partials shown;
usage counts every answer). A turn cut by `max_tokens` is not asked again.

With tools the loop runs as usual and the final turn is validated; a final turn
that still holds calls for you to run (manual mode) has `output` None. With a
fallback list, whichever model answers is validated (each in its own
mechanism); a fallback after content restarts the answer (mode "restart":
a JSON document cannot be continued by another model).
"""

from .partial_json import MISSING, PartialJSONError, PartialJSONParser, parse_partial
from .plan import structured_plan
from .spec import OutputSchema, OutputSpec
from ..protocols.output import MODES, mode_for, shape

__all__ = ["MISSING", "MODES", "OutputSchema", "OutputSpec", "PartialJSONError", "PartialJSONParser",
           "mode_for", "parse_partial", "shape", "structured_plan"]
