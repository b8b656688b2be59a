"""Every notebook runs from top to bottom in quick mode (``PYRO_BNN_QUICK=1``)."""

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Starts the ``python3`` kernel with the interpreter that runs the tests.

    Jupyter looks kernel specs up by name, user-wide ones first, and a ``python3`` spec installed
    there may name another Python, one without pyro-bnn or with another version of it.
    """

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="Python 3 (ipykernel)",
                language="python",
            )
        return self._kernel_spec


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    # The kernel inherits the environment of the process that starts it.
    monkeypatch.setenv("PYRO_BNN_QUICK", "1")
    # One thread, as conftest.py sets for the tests themselves: on a busy 2-core machine a
    # second OpenMP thread made a quick LeNet-5 epoch ten times slower, not faster.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        kernel_manager_class=ThisInterpreterKernelManager,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError at the first cell that fails
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
