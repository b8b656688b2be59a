"""Small valid inputs for every plot, and the check of a saved figure."""

import os

import torch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_saved_alone(path) -> None:
    """``path`` is a PNG file and the only file of its directory (no temporary one left)."""
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert os.listdir(path.parent) == [path.name]


def classification(num_examples: int = 60, num_classes: int = 3, seed: int = 0):
    """Probabilities ``(N, C)`` and labels ``(N,)`` of an overconfident classifier."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(num_examples, num_classes, generator=generator)
    labels = torch.randint(0, num_classes, (num_examples,), generator=generator)
    return logits.softmax(-1), labels


def scores(seed: int = 0):
    """In- and out-of-distribution scores, the second shifted up."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(40, generator=generator), 0.5 + torch.rand(30, generator=generator)


def history(variational: bool = True) -> list[dict]:
    if variational:
        return [
            {"epoch": 1, "loss": 9.0, "data": -6.0, "kl": 3.0},
            {"epoch": 2, "loss": 6.0, "data": -4.0, "kl": 2.0},
            {"epoch": 3, "loss": 5.0, "data": -3.5, "kl": 1.5},
        ]
    return [{"epoch": 1, "loss": 1.5, "lr": 0.1}, {"epoch": 2, "loss": 0.9, "lr": 0.1}]
