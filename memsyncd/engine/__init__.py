"""The sync engine: pure decisions (``decide``), the context every step shares, and one module per concern.

``decide`` is sans-IO (pure functions over dataclasses). ``context`` holds one root's
clients, stores, settings and run flags with the helpers all concerns use; ``push``,
``pull``, ``reconcile`` and ``resolve`` each carry out one concern over that context and
import nothing of each other. :mod:`memsyncd.engine.syncer` is the façade that wires them into a run.
"""
