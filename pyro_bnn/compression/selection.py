"""Choosing the pruning threshold on held-out data, by the one-standard-error rule.

Every pruning rule has a threshold (log alpha 3 for sparse variational dropout, an inclusion
probability of 0.5 for spike-and-slab, ...).  The method's default is a convention, and a
threshold read off the test error is a choice made on the test set.  :func:`choose_threshold`
makes the choice on examples the network was not trained on: for each candidate it compresses
the network (:func:`~pyro_bnn.compression.compress`), measures the held-out error of the
pruned posterior-mean network, and applies the one-standard-error rule (Breiman et al. 1984,
*Classification and Regression Trees*, Sec. 3.4.3; Hastie, Tibshirani and Friedman, *The
Elements of Statistical Learning*, Sec. 7.10): among the candidates whose error lies within one
binomial standard error of the lowest,

    ``e_t <= e_min + sqrt(e_min (1 - e_min) / n)``,

it takes the one that keeps the fewest weights (``|w != 0| / |w|``, the first column of Louizos'
Table 9; ties go to the lower error, then to the earlier candidate).  Differences smaller than
the noise of ``n`` held-out labels then do not decide, and the smaller network wins them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from pyro_bnn.metrics import accuracy

from .compress import compress


@dataclass(frozen=True)
class ThresholdCandidate:
    """One candidate threshold and what it gives on the held-out examples.

    :ivar threshold: the pruning rule's threshold.
    :ivar error: the held-out error of the pruned posterior-mean network (full precision).
    :ivar kept_fraction: the fraction of weights it keeps, ``|w != 0| / |w|``.
    :ivar pruning: its pruning compression rate (Table 9's first rate).
    :ivar architecture: the pruned architecture, ``"17-37-503-81"``.
    """

    threshold: float
    error: float
    kept_fraction: float
    pruning: float
    architecture: str


@dataclass(frozen=True)
class ThresholdChoice:
    """The candidates, the rule's tolerance and the chosen threshold.

    :ivar candidates: every candidate, in the order given.
    :ivar num_held_out: ``n``, the held-out examples.
    :ivar standard_error: ``sqrt(e_min (1 - e_min) / n)``, the tolerance of the rule.
    :ivar threshold: the chosen threshold.
    """

    candidates: tuple[ThresholdCandidate, ...]
    num_held_out: int
    standard_error: float
    threshold: float

    def as_dict(self) -> dict:
        return {
            "rule": "one standard error",
            "num_held_out": self.num_held_out,
            "standard_error": self.standard_error,
            "threshold": self.threshold,
            "candidates": [asdict(candidate) for candidate in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ThresholdChoice:
        """The choice that :meth:`as_dict` wrote."""
        return cls(
            candidates=tuple(ThresholdCandidate(**row) for row in data["candidates"]),
            num_held_out=data["num_held_out"],
            standard_error=data["standard_error"],
            threshold=data["threshold"],
        )

    def __str__(self) -> str:
        rows = "; ".join(
            f"{c.threshold:g}: {100 * c.error:.2f}%, {100 * c.kept_fraction:.2f}%"
            for c in self.candidates
        )
        return (
            f"threshold {self.threshold:g} chosen on {self.num_held_out} held-out examples by "
            f"the one-standard-error rule (standard error {100 * self.standard_error:.2f} "
            f"points); threshold: held-out error, weights kept: {rows}"
        )


def one_standard_error_index(errors: Sequence[float], sizes: Sequence[float], n: int) -> int:
    """The index the one-standard-error rule picks: the smallest ``sizes[i]`` among the
    ``errors[i] <= e_min + sqrt(e_min (1 - e_min) / n)``; ties go to the lower error, then to
    the lower index.

    :param errors: held-out error rates in ``[0, 1]``, one per candidate.
    :param sizes: the candidates' sizes (the fraction of weights kept, say).
    :param n: the number of held-out examples the errors were measured on.
    """
    if len(errors) == 0 or len(errors) != len(sizes):
        raise ValueError(
            f"one error and one size per candidate are needed, got {len(errors)} errors and "
            f"{len(sizes)} sizes"
        )
    if n < 1:
        raise ValueError(f"the errors must come from at least 1 example, got n = {n}")
    if not all(0 <= error <= 1 for error in errors):
        raise ValueError(f"the errors must be rates in [0, 1], got {list(errors)}")
    best = min(errors)
    tolerance = best + _standard_error(best, n)
    eligible = [i for i, error in enumerate(errors) if error <= tolerance]
    return min(eligible, key=lambda i: (sizes[i], errors[i], i))


def choose_threshold(
    model,
    guide,
    candidates: Sequence[float],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    batch_size: int = 1000,
) -> ThresholdChoice:
    """Choose the pruning threshold of a trained network on held-out examples.

    :param model: the trained :class:`~pyro_bnn.models.BayesianNetwork` (a classifier).
    :param guide: its trained guide.
    :param candidates: the thresholds to try, each valid for the network's pruning rules
        (one threshold for every layer, as ``compress(..., thresholds=t)`` takes it).
    :param x: held-out inputs ``(n, *input_shape)``, examples the network was not trained on.
    :param y: their class labels ``(n,)``.
    :param input_shape: the shape of one input, default the model's.
    :param batch_size: examples per forward pass.
    :returns: the :class:`ThresholdChoice`; the caller compresses with its ``threshold``.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("choose_threshold needs at least one candidate threshold")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"the candidate thresholds repeat: {candidates}")
    if getattr(model.likelihood, "task", None) != "classification":
        raise ValueError(
            "choose_threshold scores classification errors; the model is not a classifier"
        )
    model.likelihood.check_targets(y)  # 1-D integer labels in range
    if x.shape[0] != y.shape[0] or y.numel() == 0:
        raise ValueError(
            "the held-out set needs one label per input and at least one example, got inputs "
            f"of shape {tuple(x.shape)} and labels of shape {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("the held-out inputs contain NaN or infinite values")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = []
    for threshold in candidates:
        try:
            compressed = compress(model, guide, input_shape, thresholds=threshold)
        except ValueError as error:
            raise ValueError(f"candidate threshold {threshold:g}: {error}") from error
        error = _error(compressed.scenario_network("pruning"), x, y, batch_size)
        ratios = compressed.ratios
        rows.append(
            ThresholdCandidate(
                float(threshold),
                error,
                ratios.kept_fraction,
                ratios.pruning,
                compressed.architecture(),
            )
        )
    errors = [row.error for row in rows]
    index = one_standard_error_index(errors, [row.kept_fraction for row in rows], len(y))
    return ThresholdChoice(
        candidates=tuple(rows),
        num_held_out=len(y),
        standard_error=_standard_error(min(errors), len(y)),
        threshold=rows[index].threshold,
    )


def _standard_error(error: float, n: int) -> float:
    """The binomial standard error of an error rate measured on ``n`` examples."""
    return math.sqrt(error * (1 - error) / n)


@torch.no_grad()
def _error(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """The error rate of ``network`` (in evaluation mode) on ``(x, y)``, ``batch_size`` inputs
    per forward pass."""
    logits = torch.cat([network(inputs) for inputs in x.split(batch_size)])
    return 1.0 - accuracy(logits, y)
