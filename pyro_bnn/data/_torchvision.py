"""Lazy access to torchvision, which is only needed to download data sets."""

from __future__ import annotations

from types import ModuleType


def import_torchvision(what: str, alternative: str) -> ModuleType:
    """
    Import torchvision on demand, explaining how to do without it if that fails.

    torchvision is not a dependency of pyro-bnn, and a build that does not match the
    installed torch can fail on import with errors other than ImportError, so every failure
    becomes an ImportError saying what torchvision was wanted for.

    :param str what: what torchvision is needed for, e.g. ``"download MNIST"``.
    :param str alternative: how to manage without it, e.g. ``"put the IDX files in data/"``.
    """
    try:
        import torchvision
        import torchvision.datasets.utils  # noqa: F401  (the download helpers live here)
    except Exception as e:
        raise ImportError(
            f"torchvision is needed to {what}; install it, or {alternative} "
            f"(importing torchvision failed with {e!r})"
        ) from e
    return torchvision
