"""The `llmrelay` command line (an app: the top layer; nothing else in llmrelay imports it).

`main.py` parses and dispatches; `chat.py`, `logs.py` and `demo.py` are the commands;
`render.py` draws on a terminal (rich, lazily); `common.py` holds what they share.
"""

from .main import main

__all__ = ["main"]
