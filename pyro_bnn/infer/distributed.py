"""Data-parallel training on ``torch.distributed``: one process per device (started by
``torchrun``), each training on its own share of every global mini-batch, with the gradients
averaged across processes before every optimizer step.

This is what ``torch.nn.parallel.DistributedDataParallel`` does, written for Pyro's training
step: a guide creates its parameters on its first call, and :func:`~pyro_bnn.infer.fit` runs the
ELBO's backward pass and the optimizer itself, so the all-reduce sits between the two.

Why the average is the one-process estimator.  Let ``P`` processes each draw a local batch
``b_r`` of ``B`` examples, and let the model's plate have the size ``N`` of the whole training
set (not ``N / P``).  Process ``r`` estimates the negative ELBO

.. math::

    L_r = \\mathrm{KL}(q \\,\\|\\, p) - \\frac{N}{B} \\sum_{i \\in b_r}
          \\mathbb{E}_q[\\log p(y_i \\mid x_i, w)],

and the mean of the ``P`` gradients is the gradient of

.. math::

    \\frac{1}{P} \\sum_r L_r = \\mathrm{KL}(q \\,\\|\\, p) - \\frac{N}{P B}
          \\sum_{i \\in b_1 \\cup \\dots \\cup b_P} \\mathbb{E}_q[\\log p(y_i \\mid x_i, w)],

the estimator a single process computes on the global batch of ``P B`` examples: the KL counted
once, the data term scaled by the data-set size.

Contents: :func:`init_distributed` joins the process group ``torchrun`` describes (gloo for CPU
tensors, NCCL for CUDA tensors); :func:`is_main_process` says whether this process is rank 0,
the one that writes files; :func:`distributed_loader` gives a ``DataLoader`` a
``DistributedSampler``; :class:`DataParallel` is the process group as ``fit`` uses it (state
broadcast from rank 0, gradient averaging in flat buckets, agreement on flags).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta

import pyro
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)
from torch.utils.data.sampler import BatchSampler

#: Elements per all-reduce bucket (32 MiB of float32): large enough that a network of the
#: thesis's size needs one or two calls per step, small enough that the flat copy of the
#: gradients stays a fraction of the model's memory.
BUCKET_ELEMENTS = 2**23

#: The variables ``torchrun`` sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class OtherProcessError(RuntimeError):
    """Another process of the data-parallel group failed (its own error says why): raised in
    the others at the same point, so that all of them stop together instead of waiting for it."""


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"the environment variable {name} must be an integer, got {value!r}"
        ) from None


def environment_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``); 1 outside ``torchrun``."""
    world_size = _environment_int("WORLD_SIZE", 1)
    if world_size < 1:
        raise ValueError(
            f"the environment variable WORLD_SIZE must be at least 1, got {world_size}"
        )
    return world_size


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` where CUDA is available (each tensor goes through the backend of
    its device: a network trained on the CPU works as well as one on the GPU), else ``"gloo"``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Outside ``torchrun``, or with ``WORLD_SIZE=1``, it does nothing.  A group that is already
    initialized is kept as it is.  With NCCL in the backend, the process's current CUDA device
    becomes ``LOCAL_RANK``, so that each process drives its own GPU.  A group created here is
    destroyed when the interpreter exits, unless it was destroyed before.

    :param backend: ``torch.distributed``'s backend; default :func:`default_backend`.
    :param timeout: how long a collective waits for the other processes before failing.
    :returns: whether this process now trains together with others (a group of two or more).
    :raises ValueError: a variable is not an integer, or ``torchrun``'s variables are
        incomplete.
    :raises RuntimeError: this PyTorch build has no ``torch.distributed``.
    """
    world_size = environment_world_size()
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; train in one process")
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if world_size == 1:
        return False
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {world_size} but {', '.join(missing)} is not set: start the "
            "processes with torchrun (torchrun --nproc-per-node N ...)"
        )
    rank = _environment_int("RANK", 0)
    local_rank = _environment_int("LOCAL_RANK", 0)
    backend = default_backend() if backend is None else backend
    if "nccl" in backend:
        torch.cuda.set_device(local_rank)
    options = {} if timeout is None else {"timeout": timeout}
    # torch._dynamo, which the first torch.optim optimizer imports, keeps references to the
    # process group that exists when it is imported: destroy_process_group() then leaves the
    # group and its worker threads alive into the interpreter's finalization, where a thread
    # still releasing a finished collective's tensors aborts the process now and then.
    # Imported before the group exists, it holds none.
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, rank=rank, world_size=world_size, **options)
    # Before the interpreter's finalization, for the same reason, in a script that never
    # destroys the group itself.
    atexit.register(_destroy_process_group)
    return True


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(backend: str | None = None, timeout: timedelta | None = None) -> Iterator[bool]:
    """:func:`init_distributed` for the duration of a ``with`` block; a group that this block
    created is destroyed when it ends, whatever ends it.  Yields :func:`init_distributed`'s
    result."""
    created = not (dist.is_available() and dist.is_initialized())
    parallel = init_distributed(backend, timeout)
    try:
        yield parallel
    finally:
        if created:
            _destroy_process_group()


def is_main_process() -> bool:
    """Whether this process is rank 0 of the process group, or the only process: the one that
    writes checkpoints, result files and progress bars."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    """The number of processes in the process group; 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def barrier() -> None:
    """Wait until every process of the group arrives here; nothing without a group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def distributed_loader(loader: Iterable, num_replicas: int, rank: int, seed: int = 0) -> DataLoader:
    """``loader`` with each of ``num_replicas`` processes drawing its share of every epoch.

    A ``DataLoader`` over a map-style data set with its default sampler is rebuilt with a
    :class:`~torch.utils.data.DistributedSampler` in its place (shuffled where the original was,
    with ``seed`` plus the epoch, the same on every process) and every other setting kept,
    the batch size included: it is the batch of one process, the global batch is
    ``num_replicas`` times larger.  Process ``r`` takes examples ``r, r + P, r + 2P, ...`` of
    each epoch's order, which ``DistributedSampler`` pads by repeating its first examples so that
    every process takes the same number of steps.  A loader that already has a
    ``DistributedSampler`` for this group is returned as it is.

    :raises TypeError: ``loader`` is not a ``DataLoader``.
    :raises ValueError: a loader that cannot be split: an ``IterableDataset``, a custom sampler
        or batch sampler, a ``DistributedSampler`` for another group.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            "data-parallel training needs a torch.utils.data.DataLoader, which it splits across "
            f"the processes with a DistributedSampler; got a {type(loader).__name__}"
        )
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        if (sampler.num_replicas, sampler.rank) != (num_replicas, rank):
            raise ValueError(
                f"the DataLoader's DistributedSampler is for rank {sampler.rank} of "
                f"{sampler.num_replicas} processes, but this is rank {rank} of {num_replicas}"
            )
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError(
            "an IterableDataset cannot be split across processes by a DistributedSampler: "
            "use a map-style data set (such as TensorDataset)"
        )
    if loader.batch_size is None or type(loader.batch_sampler) is not BatchSampler:
        raise ValueError(
            "the DataLoader has a custom batch sampler (or batch_size=None), which cannot be "
            "split across processes: give it batch_size= and a DistributedSampler yourself"
        )
    if isinstance(sampler, RandomSampler) and not (
        sampler.replacement or sampler.num_samples != len(loader.dataset)
    ):
        shuffle = True
    elif type(sampler) is SequentialSampler:
        shuffle = False
    else:
        raise ValueError(
            f"the DataLoader draws examples with a {type(sampler).__name__}, which cannot be "
            "split across processes: give it a torch.utils.data.DistributedSampler yourself"
        )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=DistributedSampler(
            loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        ),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order,
    )


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Tell ``loader``'s sampler which epoch starts, where it has ``set_epoch`` (a
    ``DistributedSampler`` shuffles with ``seed + epoch``; without the call every epoch would
    repeat the first one's order)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _unique_tensors(modules: Sequence[nn.Module], buffers: bool) -> list[torch.Tensor]:
    seen, tensors = set(), []
    for module in modules:
        for tensor in module.buffers() if buffers else module.parameters():
            if id(tensor) not in seen:
                seen.add(id(tensor))
                tensors.append(tensor)
    return tensors


def _buckets(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by device and dtype (a flat buffer holds one of each),
    each group cut into runs of at most :data:`BUCKET_ELEMENTS` elements (a larger tensor alone
    in its bucket).  The order is the same on every process, as is the list."""
    groups: dict[tuple, list[list[int]]] = {}
    sizes: dict[tuple, int] = {}
    for index, tensor in enumerate(tensors):
        key = (tensor.device, tensor.dtype)
        if key not in groups or sizes[key] + tensor.numel() > BUCKET_ELEMENTS:
            groups.setdefault(key, []).append([])
            sizes[key] = 0
        groups[key][-1].append(index)
        sizes[key] += tensor.numel()
    return [bucket for runs in groups.values() for bucket in runs if bucket]


class DataParallel:
    """The process group as :func:`~pyro_bnn.infer.fit` uses it; see the module's docstring.

    Only :meth:`current` makes one, and only for a group of two or more processes: a single
    process never reaches this code.

    :ivar rank: this process's rank, from 0.
    :ivar world_size: the number of processes ``P``.
    """

    def __init__(self):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        # Pure NCCL moves CUDA tensors only; the small flag and seed tensors follow it there.
        backend = str(dist.get_backend())
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self._nccl_only = backend == "nccl"

    @classmethod
    def current(cls) -> DataParallel | None:
        """The initialized process group when it has two or more processes, else ``None``."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls()
        return None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, loader: Iterable, seed: int | None) -> DataLoader:
        """:func:`distributed_loader` for this process, shuffled with ``seed`` (0 when
        ``None``, ``DistributedSampler``'s default) plus the epoch."""
        return distributed_loader(loader, self.world_size, self.rank, 0 if seed is None else seed)

    def check_devices(self, parameters: Sequence[torch.Tensor]) -> None:
        """:raises ValueError: a pure NCCL group asked to average CPU tensors."""
        if self._nccl_only and any(p.device.type != "cuda" for p in parameters):
            raise ValueError(
                "the process group's backend is NCCL, which averages CUDA tensors only, but "
                "the model or guide has parameters on the CPU: move them to the GPU, or "
                "initialize the group with backend='cpu:gloo,cuda:nccl' (init_distributed's "
                "default)"
            )

    def broadcast_state(self, modules: Sequence[nn.Module]) -> None:
        """Give every process rank 0's parameters and buffers (in place, coalesced).

        :raises ValueError: the processes' modules differ in their number of tensors or
            elements (checked first; nothing is changed then).
        """
        tensors = _unique_tensors(modules, buffers=False) + _unique_tensors(modules, True)
        shape = [len(tensors), sum(t.numel() for t in tensors)]
        reference = torch.tensor(shape, dtype=torch.int64, device=self.device)
        dist.broadcast(reference, src=0)
        if reference.tolist() != shape:
            count, elements = reference.tolist()
            raise ValueError(
                f"process {self.rank}'s model and guide have {shape[0]} tensors of "
                f"{shape[1]} elements in all, rank 0's {count} of {elements}: every process "
                "must build the same architecture"
            )
        self._broadcast(tensors)

    def broadcast_buffers(self, modules: Sequence[nn.Module]) -> None:
        """Give every process rank 0's buffers (BatchNorm's running statistics, which each
        process otherwise updates from its own batches only)."""
        self._broadcast(_unique_tensors(modules, buffers=True))

    def _broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for bucket in _buckets(tensors):
                members = [tensors[i] for i in bucket]
                flat = torch.cat([t.reshape(-1) for t in members])
                dist.broadcast(flat, src=0)
                for tensor, value in zip(
                    members, flat.split([t.numel() for t in members]), strict=True
                ):
                    tensor.copy_(value.view_as(tensor))

    def seed_processes(self) -> None:
        """Seed process ``r`` with ``s + r``, ``s`` drawn from rank 0's generator.

        Each process then draws its own noise (its examples' local-reparameterization noise is
        independent of the other processes', as in one process); and the run is as repeatable as
        rank 0's generator: a ``seed=`` given to ``fit``, or a checkpoint's restored state, fixes
        it.  The seed stays below ``2**32``, numpy's limit, which ``pyro.set_rng_seed`` also sets.
        """
        drawn = torch.randint(0, 2**31, (), dtype=torch.int64).to(self.device)
        dist.broadcast(drawn, src=0)
        pyro.set_rng_seed(int(drawn.item()) + self.rank)

    def check_together(self, check: Callable[[], None], what: str) -> None:
        """Run ``check`` in every process; where it raises in any, raise in all (its own error
        where it failed, :class:`OtherProcessError` naming ``what`` elsewhere), so that no
        process is left waiting for the others in a collective."""
        failure = None
        try:
            check()
        except Exception as error:
            failure = error
        if self.any(failure is not None):
            if failure is not None:
                raise failure
            raise OtherProcessError(f"another process failed {what} (its own error says why)")

    def average(self, values: Sequence[float]) -> list[float]:
        """The mean over the processes of each of ``values`` (one small all-reduce)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process."""
        return self.average([float(flag)])[0] > 0

    def gradient_averager(self, parameters: Sequence[torch.Tensor]) -> GradientAverager:
        """A :class:`GradientAverager` of ``parameters`` over this group."""
        self.check_devices(parameters)
        return GradientAverager(parameters, self)


class GradientAverager:
    """Averages the gradients of a fixed list of parameters across the processes, one flat
    all-reduce per bucket (usually one per step), and with them a few numbers of the step.

    A bucket is ``[gradients of its parameters | one flag per parameter | the numbers]``, the
    numbers in the first float32 or float64 bucket only (a loss of 1e5 nats overflows float16;
    without such a bucket they take an all-reduce of their own).  A parameter without a gradient
    on a process (unused by its batch) contributes zeros and flag 0; after the sum, every
    parameter that had a gradient somewhere gets ``sum / P``, the others keep ``grad = None`` on
    every process, as in one process that never used them, so optimizers skip the same
    parameters everywhere.
    """

    def __init__(self, parameters: Sequence[torch.Tensor], parallel: DataParallel):
        self.parameters = list(parameters)
        self.parallel = parallel
        self.buckets = _buckets(self.parameters)
        wide = (torch.float32, torch.float64)
        self.carrier = next(
            (i for i, b in enumerate(self.buckets) if self.parameters[b[0]].dtype in wide), None
        )

    def __call__(self, numbers: Sequence[float]) -> list[float]:
        """Average the gradients in place and return the mean of ``numbers`` over the processes
        (NaN or infinite wherever one process's number is)."""
        numbers = list(numbers)
        if self.carrier is None:
            numbers = self.parallel.average(numbers)
        world_size = self.parallel.world_size
        for position, bucket in enumerate(self.buckets):
            members = [self.parameters[i] for i in bucket]
            extra = numbers if position == self.carrier else []
            sizes = [p.numel() for p in members]
            total = sum(sizes)
            flat = torch.zeros(
                total + len(members) + len(extra), dtype=members[0].dtype, device=members[0].device
            )
            offset = 0
            for j, (parameter, size) in enumerate(zip(members, sizes, strict=True)):
                if parameter.grad is not None:
                    flat[offset : offset + size].copy_(parameter.grad.reshape(-1))
                    flat[total + j] = 1.0
                offset += size
            if extra:
                flat[total + len(members) :] = flat.new_tensor(extra)
            dist.all_reduce(flat)
            flat /= world_size
            flags = flat[total : total + len(members)].tolist()
            gradients = flat[:total].split(sizes)
            for parameter, flag, gradient in zip(members, flags, gradients, strict=True):
                parameter.grad = gradient.view_as(parameter) if flag > 0 else None
            if extra:
                numbers = flat[total + len(members) :].tolist()
        return numbers
