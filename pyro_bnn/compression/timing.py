"""The CPU speed-up of an exported network over the original, timed side by side in a fresh
process.

A forward pass over a large batch allocates activations of tens of megabytes (LeNet-5-Caffe at
batch 1,024: 47 MB after its first convolution).  glibc's ``malloc`` serves blocks above its
*mmap threshold* from fresh pages that it returns to the system on ``free``, so the next pass
page-faults on every 4 KiB page and the kernel zeroes it; the threshold moves with what the
process freed before (up to 32 MiB).  In the timings of ``benchmarks/RESULTS.md`` that cost
from 0 to more than 30,000 page faults per pass, and an exported LeNet-5-Caffe's time changed
by half depending on what the process had done before.  So :func:`speed_up` times both
networks in a new process, twice:

- **steady** allocations (the reported ``speed_up``): with the mmap and trim thresholds raised
  (``mallopt``, glibc only) freed blocks stay in the heap and are usually reused, so no pass
  page-faults and the ratio is that of the computation, as an inference server with a caching
  allocator sees it (glibc does not always reuse them: a single 64-MiB output can fault on
  every pass still, and then :func:`speed_up` warns);
- the **default** allocator of a fresh process (``default_allocator``), for reference.

Each pass records its minor page faults (on Unix), so a timing disturbed by them shows it;
where the thresholds cannot be raised, :func:`speed_up` warns that its figure is the default
allocator's.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import multiprocessing
import os
import platform
import time
import warnings

import torch
from torch import nn

from .inference import optimize_for_inference

try:
    import resource
except ImportError:  # not a Unix: no page-fault counts
    resource = None

#: ``mallopt`` parameters of glibc (malloc.h) and the value that keeps freed blocks in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STEADY_THRESHOLD = 1 << 30
#: Median page faults per pass from which a steady timing warns: 1 MiB of 4-KiB pages, far
#: above the few faults of Python's own small allocations.
_FAULT_WARNING_PAGES = 256


def speed_up(
    original: nn.Module,
    exported: nn.Module | str | os.PathLike,
    input_shape: tuple[int, ...],
    *,
    batch: int = 1024,
    repeats: int = 20,
    threads: int | None = None,
) -> dict:
    """Forward-pass times of ``original`` and ``exported`` on one random batch, interleaved
    (both see the same machine state) in a new Python process; the speed-up is the ratio of
    their medians.

    The original is timed after the export's graph rewrites
    (:func:`~pyro_bnn.compression.optimize_for_inference`: channels-last convolution weights,
    max-pools as pairwise maxima, ReLU after max-pool), which alone make LeNet-5-Caffe about
    twice as fast on a CPU: ``speed_up`` is what the removed units saved, not the rewrites.
    The original as given is timed too (``speed_up_over_as_given``).  All run without autograd.

    The new process is started with ``multiprocessing``'s *spawn* method, which imports the
    calling script again (as ``__mp_main__``): a script that calls this function keeps its
    top-level work under ``if __name__ == "__main__":``, as with any spawned process.

    :param original: the network before compression; ``torch.fx`` must be able to trace it.
    :param exported: the exported network, or the path of its saved ``torch.export`` program
        (:func:`~pyro_bnn.compression.save_exported`), which the timing process loads: what a
        user deploys.
    :param input_shape: one example's shape, e.g. ``(1, 28, 28)``.
    :param threads: torch threads in the timing process (default: this process's).
    :returns: ``batch``, ``repeats``, ``threads``, ``allocator`` (``"steady"`` where glibc's
        thresholds could be raised, else ``"default"``), the medians ``original_seconds``
        (rewritten), ``as_given_seconds`` and ``exported_seconds``, ``speed_up``
        (original / exported), ``speed_up_over_as_given`` (as given / exported),
        ``page_faults`` (median minor faults per pass of each network) and
        ``default_allocator`` (the same figures before the thresholds were raised).
    :raises ValueError: for counts that are not positive integers, or an original that
        ``torch.fx`` cannot trace.
    """
    threads = torch.get_num_threads() if threads is None else threads
    for name, value in (("batch", batch), ("repeats", repeats), ("threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"the speed comparison's {name} must be a positive integer, got {value!r}"
            )
    if isinstance(exported, (str, os.PathLike)) and not os.path.isfile(exported):
        raise FileNotFoundError(f"there is no saved exported network at {os.fspath(exported)!r}")
    networks = {
        "original": optimize_for_inference(original),
        "as_given": copy.deepcopy(original).eval(),
    }
    result = _in_fresh_process(
        _time_here, networks, exported, tuple(input_shape), batch, repeats, threads
    )
    if result["allocator"] != "steady":
        warnings.warn(
            "the timing process could not keep freed memory (glibc's mallopt is not available "
            "here), so page faults may weigh on the speed-up; it is the default allocator's",
            RuntimeWarning,
            stacklevel=2,
        )
    elif max(result["page_faults"].values()) >= _FAULT_WARNING_PAGES:
        faults = ", ".join(f"{name} {count}" for name, count in result["page_faults"].items())
        warnings.warn(
            f"the steady timing still page-faulted (median per pass: {faults}): glibc did not "
            "reuse the freed blocks, and the faults weigh on the speed-up",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def _in_fresh_process(function, *arguments):
    """``function(*arguments)`` in a new spawned Python process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *arguments).result()


def _time_here(originals, exported, input_shape, batch, repeats, threads) -> dict:
    """The timing itself, in the process that runs it (:func:`speed_up`'s new process)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if isinstance(exported, (str, os.PathLike)):
        exported = torch.export.load(exported).module()
    networks = {**originals, "exported": exported}
    x = torch.randn(batch, *input_shape)
    default = _interleaved(networks, x, repeats)
    steady = _raise_glibc_thresholds()
    result = _interleaved(networks, x, repeats) if steady else default
    return {
        "batch": batch,
        "repeats": repeats,
        "threads": threads,
        "allocator": "steady" if steady else "default",
        **result,
        "default_allocator": default,
    }


@torch.no_grad()
def _interleaved(networks: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict:
    times = {name: [] for name in networks}
    faults = {name: [] for name in networks}
    for network in networks.values():
        network(x)  # warm-up
    for _ in range(repeats):
        for name, network in networks.items():
            before = _minor_faults()
            started = time.perf_counter()
            network(x)
            times[name].append(time.perf_counter() - started)
            faults[name].append(_minor_faults() - before)
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    return {
        **{f"{name}_seconds": seconds for name, seconds in median.items()},
        "speed_up": median["original"] / median["exported"],
        "speed_up_over_as_given": median["as_given"] / median["exported"],
        "page_faults": {name: sorted(values)[len(values) // 2] for name, values in faults.items()},
    }


def _minor_faults() -> int:
    return 0 if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _raise_glibc_thresholds() -> bool:
    """Keep freed blocks of up to 1 GiB in the heap (glibc only); whether it could."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_THRESHOLD)
    )
