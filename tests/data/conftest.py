import builtins
import sys
import types

import pytest


@pytest.fixture
def no_torchvision(monkeypatch):
    """
    Make every import of torchvision fail, as on a machine without it, so nothing can be
    downloaded. Returns the list of the attempted imports.
    """
    attempts = []
    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            attempts.append(name)
            raise ImportError(f"test forbids importing {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    return attempts


@pytest.fixture
def fake_torchvision(monkeypatch):
    """
    An empty stand-in for torchvision, to which a test adds download functions that write
    files instead of using the network; ``calls`` is a list for them to record their
    arguments in.
    """
    calls = []
    torchvision = types.ModuleType("torchvision")
    datasets = types.ModuleType("torchvision.datasets")
    utils = types.ModuleType("torchvision.datasets.utils")
    torchvision.datasets = datasets
    datasets.utils = utils
    for module in (torchvision, datasets, utils):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    torchvision.calls = calls
    return torchvision
