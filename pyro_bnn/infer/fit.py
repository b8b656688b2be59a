"""``fit``: stochastic variational inference over a DataLoader, with the conveniences of a
training loop (progress bar, per-epoch report, KL schedules, checkpoints, a NaN guard, a warning
when the posterior collapses, and Ctrl-C that stops after the current step with a checkpoint).

Ctrl-C (SIGINT) during :func:`fit` in the main thread does not abort the step in progress: a
handler installed for the duration of the call notes the request, the step finishes, the
checkpoint is written (when ``checkpoint=`` is given) and :class:`TrainingInterrupted`, a
``KeyboardInterrupt``, is raised.  ``fit(..., resume=True)`` then continues from the checkpoint,
restarting the interrupted epoch from its first batch with the parameters of the last finished
step.  A second Ctrl-C stops at once, as it would without the handler.

Under an initialized ``torch.distributed`` process group of two or more processes (``torchrun``,
:func:`~pyro_bnn.infer.distributed.init_distributed`), ``fit`` trains data-parallel; see
:mod:`pyro_bnn.infer.distributed` for why averaging the processes' gradients gives the
one-process estimator on the global batch.  Without one, none of that code runs.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer import util as infer_util
from pyro.optim import PyroOptim
from torch import nn
from tqdm import tqdm

from pyro_bnn.util import all_finite

from .averaging import ParameterAverage, check_ema_decay, warn_if_running_statistics
from .checkpoint import load_checkpoint, save_checkpoint
from .collapse import (
    ConstantPredictor,
    PosteriorCollapseWarning,
    collapse_message,
    collapse_symptoms,
)
from .distributed import DataParallel, GradientAverager, OtherProcessError, barrier, set_epoch
from .kl_weight import KLWeight, blundell_weight, warmup_weight
from .optimizers import TrainingOptimizer, check_optimizer_argument, make_optimizer
from .trace_kl_elbo import TraceKL_ELBO

#: The key of a checkpoint's ``extra`` that marks where Ctrl-C stopped training.
INTERRUPTED_KEY = "interrupted"
#: The key of a checkpoint's ``extra`` that holds the parameter average of ``ema_decay=``.
AVERAGE_KEY = "parameter_average"
#: In data-parallel training, a second SIGINT this soon after the first is the same Ctrl-C
#: (:class:`_InterruptRequest`).
SIGINT_ECHO_SECONDS = 1.0


@dataclass
class EpochRecord:
    """What one epoch of :func:`fit` measured.

    ``loss`` is the mean negative ELBO estimate over the epoch's steps (nats, for the whole
    data set, with the KL weight applied); ``data`` the mean expected log-likelihood of the
    data set, ``E_q[log p(y | x, w)]`` (the plate scales each batch by ``N / B``); ``kl`` the
    KL divergence from the guide to the prior, without the KL weight; ``kl_weight`` the mean
    weight applied to it; ``lr`` the learning rate of the epoch's last step (with a
    ``pyro.optim`` optimizer, the largest of its per-parameter rates).
    """

    epoch: int
    loss: float
    data: float
    kl: float
    kl_weight: float
    lr: float
    seconds: float


class NonFiniteLossError(FloatingPointError):
    """The ELBO or its gradient became NaN or infinite; no parameter was updated by that step."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :func:`fit` between two optimizer steps.

    :ivar epoch: the epoch (from 1) that was interrupted.
    :ivar step: how many of its steps had finished (0: it stopped before the epoch's first).
    :ivar checkpoint: the checkpoint written at the interruption, or ``None`` without
        ``checkpoint=``; ``fit(..., resume=True)`` continues from it, restarting ``epoch``.
    :ivar history: the :class:`EpochRecord` of every epoch that finished.
    """

    def __init__(self, epoch: int, step: int, checkpoint: str | None, history: list[EpochRecord]):
        self.epoch, self.step, self.checkpoint, self.history = epoch, step, checkpoint, history
        if checkpoint is not None:
            where = f"checkpoint written to {checkpoint}; continue with resume=True"
        else:
            where = "no checkpoint= was given; the model and guide hold that step's parameters"
        super().__init__(f"training interrupted at epoch {epoch}, step {step}; {where}")


class _Stopped(Exception):
    """Raised inside an epoch when Ctrl-C was pressed; ``steps`` of it had finished."""

    def __init__(self, steps: int):
        super().__init__(steps)
        self.steps = steps


class _InterruptRequest:
    """For the duration of a ``with`` block in the main thread, Ctrl-C sets :attr:`requested`
    instead of raising ``KeyboardInterrupt``; a second Ctrl-C raises it at once.

    Python runs signal handlers in the main thread only, and only the main thread may install
    one, so elsewhere this does nothing.  Where SIGINT is ignored (a background job), it stays
    ignored.  The previous handler comes back when the block ends, whatever ends it.

    :param echo_seconds: a second SIGINT this soon after the first is the same Ctrl-C.  Under
        ``torchrun`` each worker gets every Ctrl-C twice, milliseconds apart: from the terminal,
        which signals the whole foreground process group, and from ``torchrun``, which forwards
        the SIGINT it received to its workers.
    """

    def __init__(self, echo_seconds: float = 0.0):
        self.requested = False
        self.echo_seconds = echo_seconds
        self._first = 0.0
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested = True
            self._first = time.monotonic()
        elif time.monotonic() - self._first >= self.echo_seconds:
            raise KeyboardInterrupt

    def __enter__(self) -> _InterruptRequest:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
                self._installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            # None: the previous handler was not installed from Python; the default is the
            # closest one Python can restore.
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)
            self._installed = False


def _batch_arguments(batch) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    raise TypeError(
        "the DataLoader must yield tensors or tuples of tensors (inputs, targets), got "
        f"{type(batch).__name__}"
    )


def check_batch(model: Callable, args: tuple) -> None:
    """Reject a batch with NaN/inf values, wrong input shape or invalid targets.

    Uses the model's ``check_inputs(x)`` / ``check_targets(y)`` when it has them (the models of
    :mod:`pyro_bnn.models` do), else checks every floating-point tensor for finiteness.
    """
    check_inputs = getattr(model, "check_inputs", None)
    check_targets = getattr(model, "check_targets", None)
    for position, value in enumerate(args):
        if not isinstance(value, torch.Tensor):
            continue
        if position == 0 and check_inputs is not None:
            check_inputs(value)
        elif position == 1 and check_targets is not None:
            check_targets(value)
        elif not all_finite(value):
            name = "inputs" if position == 0 else "targets" if position == 1 else f"arg {position}"
            raise ValueError(f"the {name} contain NaN or infinite values")


def gradients_finite(gradients: list[torch.Tensor]) -> bool:
    """Whether every entry of every gradient is finite.

    A sum is NaN or infinite whenever one of its terms is (NaN and inf propagate, and
    ``inf - inf`` is NaN), so the sum of each tensor's sum is finite exactly when every entry is,
    barring an overflow of the sum itself, which would take entries near the largest number of
    the accumulating type (a norm would overflow at its square root).  It is one pass over the
    gradients with nothing squared and one read of a number, where ``get_total_norm`` groups the
    tensors by device and dtype first.  It runs after every backward pass, where it costs one
    read of every gradient: on a LeNet-300-100 a fifth to a third less than the norms of
    ``_foreach_norm``.
    """
    if not gradients:
        return True
    if len({gradient.device for gradient in gradients}) > 1:  # norms to gather across devices
        return math.isfinite(torch.nn.utils.get_total_norm(gradients).item())
    # Each tensor summed in at least float32 (a half-precision sum would overflow at 65504);
    # stack promotes float64 sums rather than rounding them.
    return math.isfinite(torch.stack([_wide_sum(gradient) for gradient in gradients]).sum().item())


def _wide_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of every entry (real and imaginary parts alike), accumulated in at least float32."""
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.sum(dtype=torch.promote_types(tensor.dtype, torch.float32))


def default_optimizer(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, fused where the parameters' device and dtype allow it.

    A mean-field guide doubles the parameters, so the optimizer's share of a step doubles too;
    the fused implementation updates all of them in one kernel.
    """
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def _parameters(*modules) -> list[nn.Parameter]:
    seen, result = set(), []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                result.append(parameter)
    return result


def _kl_at(model, guide, args) -> float:
    elbo = TraceKL_ELBO()
    with torch.no_grad():
        elbo.loss(model, guide, *args)
    return elbo.last_terms["kl"]


def fit(
    model: nn.Module,
    guide: nn.Module,
    data: Iterable,
    *,
    epochs: int,
    elbo: ELBO | None = None,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | PyroOptim | Callable | None = None,
    scheduler: Callable | None = None,
    kl_warmup_epochs: float = 0.0,
    kl_reweighting: str = "uniform",
    max_grad_norm: float | None = None,
    ema_decay: float | None = None,
    seed: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_extra: dict | None = None,
    callback: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> list[EpochRecord]:
    """Train ``guide`` to approximate ``model``'s posterior by stochastic variational inference.

    Each step draws one mini-batch from ``data``, estimates the ELBO with ``elbo`` (default
    :class:`TraceKL_ELBO`, which uses registered KL divergences and local reparameterization
    when the guide provides it), and takes one optimizer step on the parameters of both the
    model and the guide.  The KL is scaled by the data-set size through the model's plate,
    never by the batch size.

    At the end, a :class:`~pyro_bnn.infer.collapse.PosteriorCollapseWarning` says whether the
    posterior collapsed: after at least 100 steps, the last epoch's expected log-likelihood per
    example is no better than a constant predictor's (for the likelihoods of
    :mod:`pyro_bnn.models`), or the guide's ``log_alpha()`` would prune every weight.

    :param model: a Pyro model called as ``model(*batch)``; an ``nn.Module``
        (``PyroModule``), whose deterministic parameters are trained too.
    :param guide: a guide ``nn.Module`` (e.g. :class:`~pyro_bnn.guides.AutoMeanFieldNormal`).
    :param data: an iterable of batches, usually a ``torch.utils.data.DataLoader`` yielding
        ``(inputs, targets)``; every batch is checked (finite values, input shape, labels in
        range) before it can change a parameter.
    :param epochs: number of passes over ``data`` (in total, including resumed ones).
    :param elbo: a Pyro ELBO: ``TraceKL_ELBO()`` (default), ``Trace_ELBO()``,
        ``TraceMeanField_ELBO()``, ``RenyiELBO()``...
    :param lr: learning rate of the default optimizer, ``torch.optim.Adam`` (fused where the
        parameters' device and dtype allow it); ignored when ``optimizer`` is given.
    :param optimizer: a ``torch.optim.Optimizer`` over ``model`` and ``guide`` parameters (the
        guide's exist once it has seen a batch), a factory ``parameters -> Optimizer``, or a
        ``pyro.optim`` optimizer (``pyro.optim.Adam({"lr": 1e-2})``, ``ClippedAdam``, or a
        ``PyroLRScheduler`` such as ``pyro.optim.StepLR``, stepped once per epoch); see
        :mod:`pyro_bnn.infer.optimizers`.  Anything else is refused before any parameter
        changes.
    :param scheduler: a factory ``optimizer -> torch.optim.lr_scheduler.LRScheduler``,
        stepped once per epoch (``lambda opt: CosineAnnealingLR(opt, T_max=epochs)``;
        ``ReduceLROnPlateau`` gets the epoch's mean loss).  Torch optimizers only.
    :param kl_warmup_epochs: scale the KL linearly from 0 to 1 over this many epochs.
    :param kl_reweighting: ``"uniform"`` (every mini-batch weighs the KL equally) or
        ``"blundell"`` (Bayes by Backprop's geometric weights over an epoch's mini-batches).
    :param max_grad_norm: clip the gradient's global norm to this value.
    :param ema_decay: temporal averaging (:mod:`~pyro_bnn.infer.averaging`): keep an
        exponential moving average of every model and guide parameter with this decay (the L0
        reference code: 0.999), updated after each step.  When training ends the model and
        guide hold the averages (after Ctrl-C, the last step's values), and every checkpoint
        stores the averages as its model and guide (the last step's values beside them, for
        ``resume=True``), so whatever loads a checkpoint evaluates the averaged network.
        ``None`` (default): the last iterate.
    :param seed: seeds torch and Pyro first, making a CPU run exactly repeatable (including the
        DataLoader's shuffling when it uses the global generator).
    :param checkpoint: write a checkpoint of model, guide, optimizer and history to this path
        after every epoch (atomically), and when Ctrl-C stops training.  A checkpoint written
        at an interruption counts the finished epochs only and marks the interrupted one in
        ``extra["interrupted"] = {"epoch": e, "step": s}``.
    :param resume: continue from ``checkpoint`` if the file exists; an interrupted epoch starts
        again from its first batch, with the parameters of its last finished step.
    :param checkpoint_extra: more weights-only-safe data stored in every checkpoint's
        ``extra`` (a run's settings, say); the keys ``"interrupted"`` and
        ``"parameter_average"`` are fit's.
    :param callback: called with each :class:`EpochRecord`.
    :param progress: show a tqdm progress bar.
    :returns: one :class:`EpochRecord` per epoch (including resumed epochs).

    **Data-parallel training.**  Under a ``torch.distributed`` process group of ``P >= 2``
    processes (each process runs this same call, as ``torchrun`` starts them):

    - ``data``, a ``DataLoader``, gets a ``DistributedSampler`` (shuffled as the loader was,
      with ``seed``, or 0, plus the epoch): its batch size is each process's, the global batch
      is ``P`` times larger.  A loader that already has a ``DistributedSampler`` is used as it
      is.  The model's plate must have the size of the whole training set.
    - Every process starts from rank 0's model and guide parameters and buffers, and then draws
      its own noise (process ``r`` seeded with ``s + r``, ``s`` drawn from rank 0's generator,
      which ``seed`` fixes).
    - After each backward pass the gradients are averaged over the processes (one flat
      all-reduce), so the KL is counted once and the data term is that of the global batch;
      clipping, the NaN guard and the optimizer see the same averaged gradient everywhere and
      the parameters stay identical.  The step's loss, data term and KL are averaged in the
      same call: every process reports the same :class:`EpochRecord`.  An error in any
      process's step (a bad batch, a model that raises), a non-finite loss or Ctrl-C stops all
      of them at the same step: the failing process raises its error, the others
      :class:`~pyro_bnn.infer.distributed.OtherProcessError`.
    - Rank 0 alone writes the checkpoint, shows the progress bar and warns of a collapse; the
      others wait until the file is complete.  ``resume=True`` loads the checkpoint in every
      process (they must share its file system).  BatchNorm's running statistics are rank 0's
      at the end of each epoch.  ``callback`` runs in every process.
    :raises NonFiniteLossError: the loss or gradient became NaN/inf; the parameters keep their
        values from before the failing step.
    :raises TrainingInterrupted: Ctrl-C was pressed (main thread only); the step in progress
        finished and the checkpoint was written first.
    """
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if kl_reweighting not in ("uniform", "blundell"):
        raise ValueError(f"kl_reweighting must be 'uniform' or 'blundell', got {kl_reweighting!r}")
    if kl_warmup_epochs < 0:
        raise ValueError(f"kl_warmup_epochs must be non-negative, got {kl_warmup_epochs}")
    for name, value in (("model", model), ("guide", guide)):
        if not isinstance(value, nn.Module):
            raise TypeError(
                f"fit trains nn.Module models and guides (PyroModule, AutoGuide); the {name} is "
                f"a {type(value).__name__}. For functions with pyro.param statements use "
                "pyro.infer.SVI directly."
            )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    for key in (INTERRUPTED_KEY, AVERAGE_KEY):
        if checkpoint_extra is not None and key in checkpoint_extra:
            raise ValueError(f"checkpoint_extra: the key {key!r} is reserved for fit")
    ema_decay = check_ema_decay(ema_decay)
    check_optimizer_argument(optimizer, scheduler)
    parallel = DataParallel.current()
    if ema_decay is not None and (parallel is None or parallel.is_main):
        warn_if_running_statistics(model, guide)
    if parallel is not None:
        data = parallel.shard(data, seed)
    if seed is not None:
        pyro.set_rng_seed(seed)
    elbo = TraceKL_ELBO() if elbo is None else elbo
    num_steps = len(data) if hasattr(data, "__len__") else None
    if kl_reweighting == "blundell" and not num_steps:
        raise ValueError("kl_reweighting='blundell' needs a data loader with a length")

    kl_weight = KLWeight()
    weighted_model, weighted_guide = kl_weight(model), kl_weight(guide)

    # One isolated parameter store per call: PyroModules register their parameters by name, and
    # two models with equal names must not share them.
    with pyro.get_param_store().scope():
        first = None
        for batch in data:
            first = _batch_arguments(batch)
            break
        if first is None:
            raise ValueError("the data loader is empty")

        def set_up() -> None:
            check_batch(model, first)
            with torch.no_grad():
                guide(*first)  # creates the guide's parameters from the model's structure

        if parallel is None:
            set_up()
        else:
            parallel.check_together(set_up, "on its first batch")
        parameters = _parameters(model, guide)
        averager = None
        if parallel is not None:
            averager = parallel.gradient_averager(parameters)
            # Each process built its own model and its guide's parameters just now, from its
            # own batch: all of them continue from rank 0's.
            parallel.broadcast_state([model, guide])
        if optimizer is None:
            optimizer = default_optimizer(parameters, lr)
        trainer = make_optimizer(optimizer, parameters, guide)
        average = None if ema_decay is None else ParameterAverage(parameters, ema_decay)
        lr_scheduler = scheduler(trainer.optimizer) if scheduler is not None else None

        history: list[EpochRecord] = []
        start = 0
        found = resume and os.path.exists(checkpoint)
        if resume and parallel is not None:
            # One file for all (rank 0 wrote it): every process resumes, or none.
            found = parallel.any(found)
        # What a checkpoint holds besides the epoch, the history and the extra data.
        stored = {
            "model": model,
            "guide": guide,
            "optimizer": trainer.checkpointed,
            "scheduler": lr_scheduler,
        }
        if found:
            state = load_checkpoint(
                checkpoint,
                **stored,
                restore_rng=True,
                check_extra=lambda extra: _check_saved_average(extra, average),
            )
            if average is not None:
                _resume_average(average, state["extra"][AVERAGE_KEY])
            start = state["epoch"]
            history = [EpochRecord(**record) for record in state["history"]]
        if parallel is not None:
            parallel.seed_processes()

        def save(finished: int, interrupted: dict | None = None) -> None:
            extra = dict(checkpoint_extra or {})
            if interrupted is not None:
                extra[INTERRUPTED_KEY] = interrupted
            if parallel is None or parallel.is_main:
                # The file holds the averaged network as its model and guide, which is what a
                # loader evaluates, and the last step's values for resuming.
                last_step = average.apply() if average is not None and average.steps else None
                try:
                    if average is not None:
                        extra[AVERAGE_KEY] = {**average.state_dict(), "last_step": last_step}
                    save_checkpoint(
                        checkpoint,
                        **stored,
                        epoch=finished,
                        history=[asdict(r) for r in history],
                        extra=extra,
                    )
                finally:
                    if last_step is not None:
                        average.restore(last_step)
            # No process goes on, and perhaps reads the file, before it is complete.
            barrier()

        def stop(epoch: int, steps: int) -> TrainingInterrupted:
            if checkpoint is not None:
                save(len(history), {"epoch": epoch, "step": steps})
            path = os.fspath(checkpoint) if checkpoint is not None else None
            return TrainingInterrupted(epoch, steps, path, list(history))

        total = (epochs - start) * num_steps if num_steps else None
        main = parallel is None or parallel.is_main
        bar = tqdm(total=total, disable=not (progress and main), unit="step", dynamic_ncols=True)
        interrupt = _InterruptRequest(0.0 if parallel is None else SIGINT_ECHO_SECONDS)
        training = _Training(
            model, guide, weighted_model, weighted_guide, elbo, kl_weight, trainer, parameters,
            num_steps, kl_warmup_epochs, kl_reweighting, max_grad_norm, bar, interrupt, averager,
            average,
        )  # fmt: skip
        # The constant predictor the last epoch's data term is compared with.
        baseline = ConstantPredictor.for_model(model)
        try:
            with interrupt:
                for epoch in range(start, epochs):
                    last = epoch == epochs - 1
                    try:
                        record = training.run_epoch(epoch, data, baseline if last else None)
                    except _Stopped as stopped:
                        raise stop(epoch + 1, stopped.steps) from None
                    if parallel is not None:
                        parallel.broadcast_buffers([model, guide])
                    trainer.end_epoch(record.loss)
                    if lr_scheduler is not None:
                        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                            lr_scheduler.step(record.loss)
                        else:
                            lr_scheduler.step()
                    history.append(record)
                    bar.set_postfix(
                        epoch=epoch + 1, loss=f"{record.loss:.4g}", kl=f"{record.kl:.4g}"
                    )
                    if checkpoint is not None:
                        save(epoch + 1)
                    if callback is not None:
                        callback(record)
                requested = interrupt.requested
                if parallel is not None:
                    requested = parallel.any(requested)
                if requested:
                    # Ctrl-C during the last epoch's checkpoint or callback: training is
                    # complete and saved, but the caller asked to stop.
                    raise TrainingInterrupted(
                        epochs,
                        training.steps,
                        os.fspath(checkpoint) if checkpoint is not None else None,
                        list(history),
                    )
        finally:
            bar.close()
        if average is not None and average.steps:
            average.apply()
        if epochs > start and main:
            steps = training.total_steps + start * (num_steps or 0)
            symptoms = collapse_symptoms(history[-1].data, steps, baseline, guide)
            if symptoms:
                warnings.warn(collapse_message(symptoms), PosteriorCollapseWarning, stacklevel=2)
    return history


def _check_saved_average(extra: dict, average: ParameterAverage | None) -> None:
    """Refuse to resume from a checkpoint whose parameter averaging differs from this call's
    (``ema_decay=``), before anything is loaded."""
    saved = extra.get(AVERAGE_KEY)
    if average is None and saved is not None:
        raise ValueError(
            f"the checkpoint was trained with ema_decay={saved.get('decay')}: its model and guide "
            "hold averaged parameters; resume with the same ema_decay"
        )
    if average is not None and saved is None:
        raise ValueError(
            "the checkpoint was trained without ema_decay, so it has no parameter average to "
            "continue; resume without ema_decay, or start a new run"
        )
    if average is not None:
        average.check_state(saved)
        last_step = saved.get("last_step")
        if saved["steps"] and (
            not isinstance(last_step, list)
            or [tuple(t.shape) for t in last_step] != [tuple(p.shape) for p in average.parameters]
        ):
            raise ValueError("the checkpoint's parameter average lacks the last step's values")


def _resume_average(average: ParameterAverage, saved: dict) -> None:
    """Continue the average of a checkpoint, whose model and guide held the averages: the
    parameters go back to the last step's values, which the optimizer's state belongs to."""
    average.load_state_dict(saved)
    if average.steps:
        average.restore(saved["last_step"])


def _stop(optimizer: TrainingOptimizer, what: str, epoch: int, step: int, remedies: str):
    optimizer.zero_grad()
    raise NonFiniteLossError(
        f"{what} at epoch {epoch + 1}, step {step + 1}; no parameter was changed by this "
        f"step. Try a smaller learning rate, {remedies}."
    )


@contextmanager
def _structure_validation(enabled: bool):
    """Turn the ELBOs' structural checks (``pyro.infer``'s validation flag) on or off for a
    block; distribution and handler validation keep their own flags."""
    previous = infer_util.is_validation_enabled()
    infer_util.enable_validation(enabled)
    try:
        yield
    finally:
        infer_util.enable_validation(previous)


@dataclass
class _Training:
    """What stays fixed across the epochs of one :func:`fit` call."""

    model: nn.Module
    guide: nn.Module
    weighted_model: Callable
    weighted_guide: Callable
    elbo: ELBO
    kl_weight: KLWeight
    optimizer: TrainingOptimizer
    parameters: list[nn.Parameter]
    num_steps: int | None
    kl_warmup_epochs: float
    kl_reweighting: str
    max_grad_norm: float | None
    bar: tqdm
    interrupt: _InterruptRequest
    #: Averages each step's gradients over the processes; ``None`` in one process.
    averager: GradientAverager | None
    #: The temporal average of the parameters (``ema_decay=``), or ``None``.
    average: ParameterAverage | None
    steps: int = 0  #: steps taken by the latest epoch
    total_steps: int = 0  #: steps taken by this call

    def run_epoch(self, epoch: int, data: Iterable, baseline: ConstantPredictor | None):
        """One pass over ``data``; feeds each batch's targets to ``baseline`` when given.

        The ELBO's structural validation (the model and guide have the same sites, of shapes
        that fit their plates) runs on the epoch's first step only: the structure is the same
        on every step, and checking it costs a few percent of a small network's step.  The
        data (:func:`check_batch`) and the distributions' arguments are checked on every step.

        :raises _Stopped: Ctrl-C was pressed; checked before each step and after it (in
            data-parallel training after it only, as the processes agree on it in the step).
        """
        with ExitStack() as after_first_step:
            return self._epoch(epoch, data, baseline, after_first_step)

    def _epoch(self, epoch, data, baseline, after_first_step: ExitStack) -> EpochRecord:
        started = time.perf_counter()
        losses, data_terms, kls, weights = [], [], [], []
        num_steps, optimizer, parameters = self.num_steps, self.optimizer, self.parameters
        averager = self.averager
        self.steps = 0
        args = ()
        set_epoch(data, epoch)
        for step, batch in enumerate(data):
            if averager is None and self.interrupt.requested:  # pressed while the batch loaded
                raise _Stopped(step)
            args = _batch_arguments(batch)
            if averager is None:
                check_batch(self.model, args)
            progress = epoch + (step / num_steps if num_steps else 0.0)
            weight = warmup_weight(progress, self.kl_warmup_epochs)
            if self.kl_reweighting == "blundell":
                weight *= blundell_weight(step, num_steps)
            self.kl_weight.weight = weight

            optimizer.zero_grad()
            stop_requested = None
            if averager is None:
                loss = self._loss_and_grads(args)
                terms = getattr(self.elbo, "last_terms", None)
            else:
                loss, terms, stop_requested = self._averaged_loss_and_grads(args, epoch, step)
            if not math.isfinite(loss):
                _stop(optimizer, f"the loss became {loss}", epoch, step, "a KL warm-up, max_scale")
            with_grad = [p for p in parameters if p.grad is not None]
            if self.max_grad_norm is None:
                finite = gradients_finite([p.grad for p in with_grad])
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
                finite = bool(torch.isfinite(norm))
            if not finite:
                _stop(optimizer, "the gradient became non-finite", epoch, step, "max_grad_norm")
            if self.max_grad_norm is not None:
                # It takes the parameters and scales their .grad (given the gradients themselves,
                # it would find no .grad on them and clip nothing).
                torch.nn.utils.clip_grads_with_norm_(with_grad, self.max_grad_norm, norm)
            optimizer.step()
            if self.average is not None:
                self.average.update()
            self.steps = step + 1
            self.total_steps += 1
            if step == 0:
                after_first_step.enter_context(_structure_validation(False))

            losses.append(loss)
            weights.append(weight)
            if terms:
                data_terms.append(terms["data"])
                if weight > 0:
                    kls.append(terms["kl"] / weight)
            if baseline is not None and len(args) > 1:
                baseline.update(args[1])
            self.bar.update(1)
            if self.interrupt.requested if stop_requested is None else stop_requested:
                raise _Stopped(step + 1)
        if self.steps == 0:
            raise ValueError("the data loader yielded no batch")
        mean_weight = sum(weights) / len(weights)
        mean_loss = sum(losses) / len(losses)
        if kls:
            kl = sum(kls) / len(kls)
        else:
            # The ELBO does not split its terms (or the KL weight was 0): the KL of the guide at
            # the end of the epoch, analytic wherever a KL is registered.
            kl = _kl_at(self.model, self.guide, args)
            if averager is not None:  # a Monte Carlo KL differs between the processes
                kl = averager.parallel.average([kl])[0]
        if data_terms:
            data_term = sum(data_terms) / len(data_terms)
        else:
            data_term = mean_weight * kl - mean_loss
        return EpochRecord(
            epoch=epoch + 1,
            loss=mean_loss,
            data=data_term,
            kl=kl,
            kl_weight=mean_weight,
            lr=optimizer.lr,
            seconds=time.perf_counter() - started,
        )

    def _loss_and_grads(self, args: tuple) -> float:
        """The ELBO loss of the batch; its gradients are in the parameters' ``.grad`` where the
        loss is finite."""
        # At weight 1 the KL weight changes nothing: the model and guide run without its handler.
        weighted = self.kl_weight.weight != 1.0
        model = self.weighted_model if weighted else self.model
        guide = self.weighted_guide if weighted else self.guide
        if hasattr(self.elbo, "differentiable_loss"):
            surrogate = self.elbo.differentiable_loss(model, guide, *args)
            loss = surrogate.item()
            if math.isfinite(loss):
                surrogate.backward()
            return loss
        # ELBOs such as RenyiELBO only offer loss_and_grads, which runs backward itself.
        return self.elbo.loss_and_grads(model, guide, *args)

    def _averaged_loss_and_grads(self, args: tuple, epoch: int, step: int):
        """:meth:`_loss_and_grads` of this process's batch, then the gradients, the loss and the
        ELBO terms averaged over the processes, in one all-reduce that also tells every process
        whether any failed or was asked to stop.

        Every process must reach that all-reduce, or the others would wait for it forever: an
        error in this process's part (a bad batch, a model that raises) is held until then and
        raised in every process, as it is here and as :class:`OtherProcessError` elsewhere.

        :returns: ``(loss, terms, stop requested)``, the same in every process; the loss is
            non-finite when any process's was.
        """
        failure = None
        try:
            check_batch(self.model, args)
            loss = self._loss_and_grads(args)
        except Exception as error:
            failure, loss = error, math.nan
        terms = getattr(self.elbo, "last_terms", None)
        data, kl = (terms["data"], terms["kl"]) if terms else (0.0, 0.0)
        numbers = [loss, data, kl, float(failure is not None), float(self.interrupt.requested)]
        loss, data, kl, failed, stop = self.averager(numbers)
        if failed > 0:
            self.optimizer.zero_grad()
            if failure is not None:
                raise failure
            raise OtherProcessError(
                f"another process failed at epoch {epoch + 1}, step {step + 1} (its own error "
                "says why); no parameter was changed by this step"
            )
        return loss, ({"data": data, "kl": kl} if terms else terms), stop > 0
