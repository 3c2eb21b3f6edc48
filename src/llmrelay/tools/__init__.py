"""Tools: Python functions the model can call, and running them.

`tool.py` (the `Tool` type, `@tool`, argument checks, results), `schema.py` (JSON schema
from type hints and docstrings; the schema checker) and `run.py` (running a turn's calls
in threads or tasks). Imports only the vocabulary (events, messages, errors); pydantic
loads when a tool is built, never with `import llmrelay`.
"""

from .schema import _parse_docstring, _tidy_schema, schema_errors
from .tool import Tool, as_tools, check_call, result_of, serialize_result, tool

__all__ = ["Tool", "as_tools", "check_call", "result_of", "schema_errors", "serialize_result", "tool",
           "_parse_docstring", "_tidy_schema"]
