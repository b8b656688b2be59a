"""The switch between local reparameterization (training) and shared weight draws (prediction)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_ENABLED = contextvars.ContextVar("pyro_bnn_local_reparameterization", default=True)


@contextlib.contextmanager
def local_reparameterization(enabled: bool = True) -> Iterator[None]:
    """Turn local reparameterization on or off inside a ``with`` block.

    It is on by default.  :func:`pyro_bnn.predict` turns it off, because at prediction time one
    weight sample shared by a whole batch is cheaper than per-example pre-activation noise.  The
    setting is a context variable: it is restored on exit, even on error, and other threads are
    unaffected.
    """
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def local_reparameterization_enabled() -> bool:
    return _ENABLED.get()
