"""The README's quick start runs and shows what it says."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start_blocks() -> list[str]:
    """The Python blocks of the README's quick-start section."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_quick_start_runs_and_separates_the_informative_features():
    blocks = _quick_start_blocks()
    assert len(blocks) == 1
    namespace = {"__name__": "readme"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    log_alpha = namespace["log_alpha"]
    assert (log_alpha[:2] < -5).all()
    assert torch.median(log_alpha[2:]) > 0
    # Pyro's Predictive on the same model and guide: one draw per sample of the weight and y.
    predictive = namespace["predictive"]
    assert predictive["y"].shape == (100, 100)
    assert predictive["linear.weight"].shape[0] == 100


def test_quick_start_cell_run_twice_keeps_training():
    """A re-run notebook cell: the second run continues from Pyro's parameter store."""
    block = _quick_start_blocks()[0]
    block = block.replace("range(2000)", "range(300)")
    block = block.replace("    svi.step(x, y)", "    losses.append(svi.step(x, y))")
    block = block.replace("for step in", "losses = []\nfor step in")
    runs = []
    for _ in range(2):
        namespace = {"__name__": "readme"}
        exec(compile(block, str(README), "exec"), namespace)
        runs.append(namespace["losses"])
    first, second = runs
    assert first[-1] < first[0] / 5
    assert second[0] < first[0] / 5 and second[-1] <= second[0]


def test_diagnostics_example_runs_and_the_guide_passes_its_check():
    section = README.read_text().split("## Posterior diagnostics with ArviZ", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1
    namespace = {"__name__": "readme"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["khat"] < 0.5
    assert namespace["datatree"]["log_likelihood"]["obs"].shape == (1, 1000, 200)
