"""The sans-IO engine: control flow written once for sync and async.

`prepare.py` turns a model string and arguments into a validated `Call`; `plan.py`
holds the plans (generators that yield actions: Send, RunTools, Emit, Sleep) for one
turn and the tool loop; `turn.py` (`StreamCore`) folds one HTTP response through a
protocol decoder into events and a `Response`, with `assembler.py`. No sockets, no
threads, no event loop here: the drivers in `llmrelay.stream` perform the actions.
May import tools, protocols, wire and the vocabulary; never transports or anything above.
"""
