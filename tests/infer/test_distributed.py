"""Data-parallel training: two gloo processes on this machine against one process over the same
global batches, and ``pyro-bnn train`` under ``torchrun``.

The equality test needs an estimator without noise, since the processes draw other noise than
one process does: a MAP fit (``AutoDelta`` guide) of a Bayesian linear regression, whose negative
ELBO ``-log p(w) - (N / B) sum_i log p(y_i | x_i, w)`` is a function of the parameters alone.
Its prior term plays the KL's part: counted once per process, it is counted once in the average
only if the gradients are averaged rather than summed, and the data term matches only if the
plate has the global size.
"""

import contextlib
import importlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing
from pyro.infer.autoguide import AutoDelta, init_to_value
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pyro_bnn.cli import main
from pyro_bnn.infer import NonFiniteLossError, OtherProcessError, fit
from pyro_bnn.infer.distributed import (
    DataParallel,
    distributed_loader,
    init_distributed,
    is_main_process,
    process_group,
)
from pyro_bnn.infer.fit import _InterruptRequest

from .common import classification_problem, parameters

WORLD = 2
#: Local batch, and examples: three global batches of 2 x 4 per epoch.
BATCH, NUM_DATA = 4, 24
#: Seconds a group of processes may take before the test kills it.
DEADLINE = 120
README = Path(__file__).resolve().parents[2] / "README.md"


class LinearRegression(PyroModule):
    """``y ~ Normal(x w + b, exp(log_scale))`` with Normal priors on ``w`` and ``b``;
    ``log_scale`` is a plain parameter of the model.  With ``trap`` set, an input above 100 makes
    it raise (Pyro refuses a NaN factor)."""

    def __init__(self, log_scale: float = 0.0, trap: bool = False):
        super().__init__()
        self.linear = PyroModule[nn.Linear](3, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.trap = trap

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        if self.trap:
            pyro.factor("trap", torch.where(x[:, 0] > 100, math.nan, 0.0).sum())
        with pyro.plate("data", NUM_DATA, subsample=torch.arange(len(x))):
            pyro.sample("y", dist.Normal(mean, self.log_scale.exp()), obs=y)
        return mean


def regression_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_DATA, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.1 * torch.randn(NUM_DATA, generator=generator)
    return TensorDataset(x, y)


def map_problem(start: float, trap: bool = False):
    """The regression and its MAP guide, both started at ``start``: rank 0 starts elsewhere
    than the others, so only the broadcast of rank 0's state makes them agree."""
    pyro.clear_param_store()
    model = LinearRegression(log_scale=start, trap=trap)
    values = {"linear.weight": torch.full((1, 3), start), "linear.bias": torch.full((1,), start)}
    return model, AutoDelta(model, init_loc_fn=init_to_value(values=values))


def outcome(call) -> dict:
    """What ``call()`` returned, or the name and message of what it raised."""
    try:
        return {"value": call()}
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}


def history(records) -> list[dict]:
    return [{k: v for k, v in vars(r).items() if k != "seconds"} for r in records]


# The runs of each process; the one-process references below repeat them on the global batches.


def resumed_map_run(rank: int, directory: str) -> dict:
    """Shuffled loader split by fit, Adam with clipping and temporal averaging, two epochs with
    a checkpoint, then a fresh model and guide resumed to a third; counts the calls that write
    the checkpoint."""
    fit_module = importlib.import_module("pyro_bnn.infer.fit")
    writes = []
    original = fit_module.save_checkpoint

    def counting(*args, **kwargs):
        writes.append(rank)
        return original(*args, **kwargs)

    fit_module.save_checkpoint = counting
    path = os.path.join(directory, "checkpoint.pt")
    try:
        for epochs in (2, 3):
            model, guide = map_problem(0.1 if rank == 0 else 0.7)
            loader = DataLoader(regression_data(), batch_size=BATCH, shuffle=True)
            options = {"lr": 0.05, "seed": 7, "max_grad_norm": 20.0, "ema_decay": 0.8,
                       "checkpoint": path, "progress": False}  # fmt: skip
            records = fit(model, guide, loader, epochs=epochs, resume=epochs == 3, **options)
    finally:
        fit_module.save_checkpoint = original
    epoch = torch.load(path, weights_only=True)["epoch"]
    return {"state": parameters(model, guide), "history": history(records), "writes": writes,
            "checkpoint epoch": epoch}  # fmt: skip


def sampler_map_run(rank: int) -> dict:
    """The user's own DistributedSampler, in order, and a pyro.optim optimizer: SGD, whose step
    is proportional to the gradient (Adam's hardly changes when the gradient is scaled)."""
    model, guide = map_problem(0.1 if rank == 0 else -0.4)
    data = regression_data()
    loader = DataLoader(data, batch_size=BATCH, sampler=DistributedSampler(data, shuffle=False))
    optimizer = pyro.optim.SGD({"lr": 2e-3})
    records = fit(model, guide, loader, epochs=2, optimizer=optimizer, progress=False)
    return {"state": parameters(model, guide), "history": history(records)}


def failing_map_run(rank: int, problem: str) -> dict:
    """Rank 1's second batch (examples 9, 11, 13, 15) holds a target that makes the loss
    infinite, a NaN input, or an input on which the model raises."""
    model, guide = map_problem(0.1, trap=problem == "model error")
    x, y = regression_data().tensors
    if problem == "infinite loss":
        y[9] = 1e30
    else:
        x[9, 0] = math.nan if problem == "nan input" else 1000.0
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    result = outcome(lambda: fit(model, guide, loader, epochs=1, progress=False))
    return {**result, "state": parameters(model, guide)}


def sparse_vd_run(rank: int) -> dict:
    """The sparse-VD network with the mean-field guide, each process built from its own seed."""
    torch.manual_seed(rank)
    pyro.clear_param_store()
    model, guide, loader, _, _ = classification_problem()
    records = fit(model, guide, loader, epochs=2, lr=1e-2, seed=0, progress=False)
    return {"state": parameters(model, guide), "history": history(records)}


def averaged_gradients(rank: int) -> dict:
    """``a`` has a gradient in both processes, ``b`` in rank 1's only, ``c`` in none, and the
    float16 ``d`` in rank 0's only, in a bucket of its own."""
    a, b, c = (torch.zeros(3, requires_grad=True) for _ in range(3))
    d = torch.zeros(2, dtype=torch.float16, requires_grad=True)
    a.grad = torch.full((3,), 2.0 + rank)
    if rank == 1:
        b.grad = torch.tensor([4.0, 6.0, 8.0])
    else:
        d.grad = torch.tensor([2.0, -2.0], dtype=torch.float16)
    numbers = DataParallel().gradient_averager([a, b, c, d])([10.0 * (rank + 1), 1e5])
    return {"grads": [p.grad for p in (a, b, c, d)], "numbers": numbers}


def worker(rank: int, port: int, directory: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    results = {}
    try:
        with process_group(timeout=timedelta(seconds=60)):
            results["main"] = is_main_process()
            results["averager"] = averaged_gradients(rank)
            results["resumed"] = resumed_map_run(rank, directory)
            results["sampler"] = sampler_map_run(rank)
            for problem in ("infinite loss", "nan input", "model error"):
                results[problem] = failing_map_run(rank, problem)
            model, guide = map_problem(0.1)
            batches = [regression_data().tensors]
            results["list"] = outcome(lambda: fit(model, guide, batches, epochs=1))
            results["sparse vd"] = sparse_vd_run(rank)
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, os.path.join(directory, f"rank{rank}.pt"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The results of :func:`worker` in each of the two processes."""
    directory = tmp_path_factory.mktemp("distributed")
    context = torch.multiprocessing.start_processes(
        worker, args=(free_port(), str(directory)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {WORLD} training processes took over {DEADLINE} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    results = [torch.load(directory / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank, result in enumerate(results):
        assert "crash" not in result, f"rank {rank}:\n{result.get('crash')}"
    return results


def global_loader(sampler_seed: int | None) -> DataLoader:
    """One process's loader over the global batches of the two processes: their local batches
    interleave the epoch's order (rank r takes positions r, r + 2, ...), so global batch k is
    positions 8k to 8k + 7 of the same order."""
    data = regression_data()
    if sampler_seed is None:
        return DataLoader(data, batch_size=WORLD * BATCH)
    order = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=sampler_seed)
    return DataLoader(data, batch_size=WORLD * BATCH, sampler=order)


def max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


def check_history(parallel: list[dict], single: list[dict]) -> None:
    assert len(parallel) == len(single)
    for ours, reference in zip(parallel, single, strict=True):
        assert ours.keys() == reference.keys()
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_gradients_are_averaged_where_any_process_has_one(ranks):
    for rank in ranks:
        a, b, c, d = rank["averager"]["grads"]
        assert torch.equal(a, torch.full((3,), 2.5))
        assert torch.equal(b, torch.tensor([2.0, 3.0, 4.0]))  # zeros from rank 0
        assert c is None  # no process had one: the optimizers skip it everywhere
        assert d.dtype == torch.float16 and torch.equal(d, torch.tensor([1.0, -1.0]).half())
        assert rank["averager"]["numbers"] == [15.0, 1e5]


def test_two_processes_equal_one_over_the_global_batches(ranks):
    """Fit's own split of a shuffled loader, a checkpoint and a resumed third epoch, with
    temporal averaging: every process ends with the one-process average."""
    model, guide = map_problem(0.1)
    records = fit(
        model, guide, global_loader(7), epochs=3, lr=0.05, seed=7, max_grad_norm=20.0,
        ema_decay=0.8, progress=False,
    )  # fmt: skip
    single = parameters(model, guide)
    for rank in ranks:
        assert max_difference(rank["resumed"]["state"], single) < 1e-5
        check_history(rank["resumed"]["history"], history(records))
    assert max_difference(ranks[0]["resumed"]["state"], ranks[1]["resumed"]["state"]) == 0


def test_the_users_distributed_sampler_and_pyro_optim(ranks):
    model, guide = map_problem(0.1)
    optimizer = pyro.optim.SGD({"lr": 2e-3})
    records = fit(model, guide, global_loader(None), epochs=2, optimizer=optimizer, progress=False)
    for rank in ranks:
        assert max_difference(rank["sampler"]["state"], parameters(model, guide)) < 1e-5
        check_history(rank["sampler"]["history"], history(records))


def test_only_rank_0_writes_the_checkpoint(ranks):
    assert [rank["main"] for rank in ranks] == [True, False]
    assert ranks[0]["resumed"]["writes"] == [0, 0, 0]  # two epochs, then the resumed third
    assert ranks[1]["resumed"]["writes"] == []
    # Every process read the complete file after the last epoch's barrier.
    assert [rank["resumed"]["checkpoint epoch"] for rank in ranks] == [3, 3]


def test_the_sparse_vd_network_stays_in_sync(ranks):
    first, second = (rank["sparse vd"] for rank in ranks)
    assert max_difference(first["state"], second["state"]) == 0
    assert first["history"] == second["history"]
    for record in first["history"]:
        assert math.isfinite(record["loss"]) and record["kl"] > 0 and record["data"] < 0


def test_an_infinite_loss_in_one_process_stops_both(ranks):
    for rank in ranks:
        assert rank["infinite loss"]["error"] == NonFiniteLossError.__name__
        assert "the loss became inf at epoch 1, step 2" in rank["infinite loss"]["message"]
    first, second = (rank["infinite loss"]["state"] for rank in ranks)
    assert max_difference(first, second) == 0


@pytest.mark.parametrize(
    "problem, message",
    [("nan input", "the inputs contain NaN"), ("model error", "Expected parameter log_factor")],
)
def test_an_error_in_one_process_stops_both(ranks, problem, message):
    first, second = (rank[problem] for rank in ranks)
    assert second["error"] == "ValueError" and message in second["message"]
    assert first["error"] == OtherProcessError.__name__
    assert "another process failed at epoch 1, step 2" in first["message"]
    assert max_difference(first["state"], second["state"]) == 0


def test_a_plain_list_of_batches_is_refused_in_every_process(ranks):
    for rank in ranks:
        assert rank["list"]["error"] == "TypeError"
        assert "needs a torch.utils.data.DataLoader" in rank["list"]["message"]


# In one process.


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(regression_data())


def test_the_split_takes_every_other_example_and_keeps_the_loader():
    data = regression_data()
    loader = DataLoader(data, batch_size=BATCH, drop_last=True)
    for rank in range(WORLD):
        shard = distributed_loader(loader, WORLD, rank)
        assert shard.batch_size == BATCH and shard.drop_last
        assert not shard.sampler.shuffle
        assert list(shard.sampler) == list(range(rank, NUM_DATA, WORLD))
    assert distributed_loader(loader, WORLD, 0, seed=3).sampler.seed == 3
    shuffled = distributed_loader(DataLoader(data, shuffle=True), WORLD, 1)
    assert shuffled.sampler.shuffle
    assert distributed_loader(shard, WORLD, 1) is shard


@pytest.mark.parametrize(
    "loader, message",
    [
        ([(torch.zeros(2, 3), torch.zeros(2))], "needs a torch.utils.data.DataLoader"),
        (DataLoader(regression_data(), batch_size=None), "custom batch sampler"),
        (
            DataLoader(regression_data(), sampler=torch.utils.data.WeightedRandomSampler(
                torch.ones(NUM_DATA), NUM_DATA)),
            "WeightedRandomSampler, which cannot be split",
        ),
        (
            DataLoader(regression_data(), sampler=DistributedSampler(
                regression_data(), num_replicas=3, rank=0)),
            "rank 0 of 3 processes, but this is rank 1 of 2",
        ),
        (DataLoader(Stream()), "IterableDataset"),
    ],
)  # fmt: skip
def test_loaders_that_cannot_be_split_are_refused(loader, message):
    with pytest.raises((TypeError, ValueError), match=message):
        distributed_loader(loader, WORLD, 1)


def test_without_torchrun_nothing_is_initialized(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() is False
    assert is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not set"):
        init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        init_distributed()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "deterministic"], "--method deterministic trains in one process"),
        (["evaluate"], "pyro-bnn evaluate runs in one process"),
    ],
)
def test_commands_that_run_in_one_process_refuse_torchrun(monkeypatch, tmp_path, argv, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main([*argv, "--output", str(tmp_path / "run")])
    assert code == 2 and message in stderr.getvalue()
    assert not (tmp_path / "run").exists()


# Under torchrun.


def torchrun(arguments: list[str], directory) -> tuple[str, str]:
    """Run ``torchrun --standalone --nproc-per-node 2 ARGUMENTS`` in ``directory``; returns its
    stdout and stderr after checking that it succeeded."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(WORLD), *arguments]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=directory,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers
        process.communicate()
        raise
    assert process.returncode == 0, stderr
    return stdout, stderr


def test_pyro_bnn_train_under_torchrun(tmp_path):
    stdout, stderr = torchrun(
        ["-m", "pyro_bnn", "train", "--data", "digits", "--epochs", "1", "--train-subset", "256",
         "--batch-size", "32", "--num-samples", "10", "--quiet", "--output", "run"],
        tmp_path,
    )  # fmt: skip
    output = tmp_path / "run"
    # Rank 0 alone prints, warns and writes.
    assert stdout.count("sparse-vd lenet-300-100 on digits, 1 epoch") == 1, stdout
    assert stderr.count("shorter than the KL warm-up") == 1, stderr
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pt",
        "log_alpha_histogram.png",
        "metrics.json",
        "training_curves.png",
        "weight_mask.png",
    ]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["processes"] == WORLD and metrics["batch_size"] == 32
    assert len(metrics["history"]) == 1 and math.isfinite(metrics["history"][0]["loss"])
    payload = torch.load(output / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 1 and payload["extra"]["run"]["processes"] == WORLD


def test_the_readme_script_under_torchrun(tmp_path):
    section = README.read_text().split("## Data-parallel training", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert "epochs=20" in block
    (tmp_path / "train.py").write_text(block.replace("epochs=20", "epochs=2"))
    stdout, _ = torchrun(["train.py"], tmp_path)
    assert len(re.findall(r"^loss \d+\.\d, KL \d+\.\d$", stdout, flags=re.MULTILINE)) == 1, stdout
    payload = torch.load(tmp_path / "runs/data-parallel/checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 2


def test_a_sigint_that_torchrun_echoes_is_one_ctrl_c(interruptible):
    """The terminal signals torchrun's workers, and torchrun forwards the signal to them."""
    with _InterruptRequest(echo_seconds=60.0) as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert interrupt.requested
    with pytest.raises(KeyboardInterrupt), _InterruptRequest(echo_seconds=0.0):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
