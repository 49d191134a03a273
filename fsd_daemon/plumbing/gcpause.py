"""Pausing the cyclic garbage collector while a large answer is decoded and turned into records.

Decoding the state API's answer at 10,000 actors allocates 10,000 dicts that live only until
the records are built. With the collector running, the young-generation collections during
the decode find them alive and promote them, and every few polls that promotion triggers a
full collection over everything the daemon holds: tens of ms per changed poll at 10,000
servers (bench/scale.py). Paused, they are freed by reference counting before the collector
ever sees them.

Invariant: the pause is only ever around CPU-bound work of bounded size (no I/O, no waiting),
and restores the collector's previous state, so it cannot leave collection off; nothing that
may create reference cycles of unbounded size runs inside it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
