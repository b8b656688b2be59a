"""The installed layout: models/ and guides/ are subpackages of pyro_bnn, never top level."""

import subprocess
import sys

import pyro_bnn
import pyro_bnn.distributions


def test_subpackages_import_and_no_top_level_models_or_guides(tmp_path):
    # Run from an empty directory so the repository root is not on sys.path.
    code = (
        "import importlib.util, pyro_bnn, pyro_bnn.guides, pyro_bnn.models;"
        "print(importlib.util.find_spec('models'), importlib.util.find_spec('guides'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None"]


def test_public_names_exist():
    for module in (pyro_bnn, pyro_bnn.distributions):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
