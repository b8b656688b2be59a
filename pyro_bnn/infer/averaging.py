"""Temporal averaging of parameters: an exponential moving average of the optimizer's iterates.

Louizos' thesis trains its matrix-normal networks (Sec. 2.3) and its L0 networks (Sec. 7.3)
with "Adam using the default hyper-parameters and temporal averaging"; the L0 reference code
evaluates the average with decay ``beta_ema = 0.999``.  Averaging the iterates (Polyak and
Juditsky 1992, here with exponential forgetting) cancels much of the noise that a stochastic
gradient leaves in the last iterate, which matters most for the noisy estimators of Bayesian
layers.  After ``t`` steps with decay ``d`` the average of parameter :math:`\\theta` is

.. math:: \\bar\\theta_t = \\frac{(1 - d) \\sum_{s=1}^t d^{\\,t-s} \\theta_s}{1 - d^t},

the bias-corrected form of the running sum :math:`m_t = d\\,m_{t-1} + (1 - d)\\,\\theta_t`,
:math:`m_0 = 0` (as Adam corrects its moments), so the first steps are not pulled towards zero
and :math:`\\bar\\theta_t` is a weighted mean of the iterates at every ``t``.

Only parameters are averaged.  Buffers, such as BatchNorm's running statistics, keep the last
step's values, which describe the averaged network's activations only approximately (stochastic
weight averaging recomputes them with one pass over the training data afterwards);
:func:`warn_if_running_statistics` says so when such a network is averaged.

:class:`ParameterAverage` keeps the running sums; :func:`pyro_bnn.fit` and
:func:`pyro_bnn.baselines.train_deterministic` take ``ema_decay=`` and leave the averaged
parameters in the model and guide when training ends.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import torch
from torch import nn


def check_ema_decay(decay, name: str = "ema_decay") -> float | None:
    """``decay`` as a float, or ``None``; refuses anything outside ``(0, 1)``, naming the
    option ``name`` (``"--ema-decay"`` on the command line)."""
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1) or None, got {decay!r}")
    if not (math.isfinite(decay) and 0.0 < decay < 1.0):
        raise ValueError(
            f"{name} must lie strictly between 0 and 1, got {decay} (0.999 averages about the "
            "last 1,000 steps)"
        )
    return float(decay)


class RunningStatisticsWarning(UserWarning):
    """Temporal averaging of a network whose running statistics (BatchNorm's) are not averaged."""


def warn_if_running_statistics(*modules, stacklevel: int = 3) -> None:
    """Warn with :class:`RunningStatisticsWarning` when any of ``modules`` (objects that are not
    ``nn.Module`` s are skipped) holds running statistics, such as a BatchNorm layer that tracks
    them.  Temporal averaging leaves those buffers at the last step's values, which were
    collected with the last step's parameters, not with the averaged ones."""
    found = {}  # by identity: a layer the guide also holds is named once
    for module in modules:
        if isinstance(module, nn.Module):
            for name, child in module.named_modules():
                if getattr(child, "running_mean", None) is not None:
                    found.setdefault(id(child), name or type(child).__name__)
    names = list(found.values())
    if names:
        shown = ", ".join(map(repr, names[:5])) + (
            f" and {len(names) - 5} more" if len(names) > 5 else ""
        )
        warnings.warn(
            f"ema_decay averages parameters only: the running statistics of {shown} keep the "
            "last step's values, which were gathered with the last step's parameters; for a "
            "deterministic network, recompute them with torch.optim.swa_utils.update_bn",
            RunningStatisticsWarning,
            stacklevel=stacklevel,
        )


class ParameterAverage:
    """The exponential moving average of a list of parameters over optimizer steps.

    Call :meth:`update` after every optimizer step; :meth:`averages` gives the bias-corrected
    averages (see the module docstring), :meth:`apply` writes them into the parameters.

    :param parameters: the parameters to average (their values now do not count: the average
        starts with the first :meth:`update`).
    :param decay: ``d`` in ``(0, 1)``; the average weighs the last ``1 / (1 - d)`` steps most.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float):
        decay = check_ema_decay(decay)
        if decay is None:
            raise ValueError("ParameterAverage needs a decay in (0, 1)")
        self.parameters = list(parameters)
        self.decay = decay
        self.steps = 0
        self._sums = [torch.zeros_like(p, requires_grad=False) for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values into the average: ``m <- d m + (1 - d) theta``."""
        weight = 1.0 - self.decay
        for total, parameter in zip(self._sums, self.parameters, strict=True):
            total.lerp_(parameter.detach(), weight)
        self.steps += 1

    @torch.no_grad()
    def averages(self) -> list[torch.Tensor]:
        """The averaged values, one tensor per parameter, in the order given.

        :raises RuntimeError: before the first :meth:`update`.
        """
        if self.steps == 0:
            raise RuntimeError("no optimizer step has been averaged yet")
        correction = 1.0 - self.decay**self.steps
        return [total / correction for total in self._sums]

    @torch.no_grad()
    def apply(self) -> list[torch.Tensor]:
        """Write the averages into the parameters.

        :returns: the values they replaced, for :meth:`restore`.
        """
        replaced = [p.detach().clone() for p in self.parameters]
        for parameter, average in zip(self.parameters, self.averages(), strict=True):
            parameter.copy_(average)
        return replaced

    @torch.no_grad()
    def restore(self, values: list[torch.Tensor]) -> None:
        """Give the parameters back the ``values`` that :meth:`apply` returned."""
        for parameter, value in zip(self.parameters, values, strict=True):
            parameter.copy_(value)

    def state_dict(self) -> dict:
        """Weights-only-safe state: ``{"decay", "steps", "sums"}``."""
        return {
            "decay": self.decay,
            "steps": self.steps,
            "sums": [total.clone() for total in self._sums],
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from a :meth:`state_dict`: the same decay and parameter shapes, checked
        before anything changes."""
        self.check_state(state)
        with torch.no_grad():
            for total, saved in zip(self._sums, state["sums"], strict=True):
                total.copy_(saved)
        self.steps = int(state["steps"])

    def check_state(self, state) -> None:
        """Raise ``ValueError`` unless ``state`` is a :meth:`state_dict` of an average with this
        decay over parameters of these shapes."""
        try:
            decay, steps, sums = state["decay"], state["steps"], list(state["sums"])
        except (TypeError, KeyError) as error:
            raise ValueError(f"not a parameter-average state: {error}") from None
        if decay != self.decay:
            raise ValueError(
                f"the saved parameter average used ema_decay={decay}, this one {self.decay}; "
                "continue with the same decay"
            )
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"the saved parameter average counts {steps!r} steps")
        shapes = [tuple(p.shape) for p in self.parameters]
        saved = [tuple(getattr(total, "shape", ())) for total in sums]
        if saved != shapes:
            raise ValueError(
                f"the saved parameter average is over {len(saved)} tensors of shapes that do "
                f"not match these {len(shapes)} parameters"
            )


__all__ = [
    "ParameterAverage",
    "RunningStatisticsWarning",
    "check_ema_decay",
    "warn_if_running_statistics",
]
