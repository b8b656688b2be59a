"""The README's quick start runs and shows what it says."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs_and_separates_the_informative_features():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    namespace = {"__name__": "readme"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    log_alpha = namespace["log_alpha"]
    assert (log_alpha[:2] < -5).all()
    assert torch.median(log_alpha[2:]) > 0
