"""The fused Triton kernel of ``sampled_linear`` against the torch reference, on one GPU.

First an equality check: for every option (input scale per example and per unit, deterministic
and Gaussian bias, output scale per example and per unit, with and without
``scale_variance``, variance and log-variance) on ragged shapes, in float32, bfloat16 and
float16, the kernel's output and gradients against the reference's given the same noise
(:func:`~pyro_bnn.ops.fused_noise`), the reference evaluated in float64 from the same inputs.

Then, for each shape ``(B, in, out)`` and dtype, side by side in one run:

- ``fused``: :func:`~pyro_bnn.ops.fused_sampled_linear` (what ``sampled_linear`` runs on CUDA);
- ``reference``: ``sampled_linear`` under ``fused_kernel(False)``, the torch code;
- ``linear``: ``F.linear(x, mean, bias)``, the deterministic layer: the floor;

the forward and forward + backward times (medians by ``triton.testing.do_bench``, CUDA events)
and the peak memory each allocates beyond what existed before it (forward alone, and forward +
backward; ``torch.cuda.max_memory_allocated``).  The case timed is sparse variational dropout's
(variance, deterministic bias); ``--case compression`` adds a per-example input scale and a
per-unit output scale.  Shapes: LeNet-300-100's layers (784 -> 300, 300 -> 100) at
B = 128, 512, 2048, 8192, and large layers (4096 -> 4096, 8192 -> 8192) at B = 4096, 8192.

``--epoch`` trains the sparse-VD LeNet-300-100 on Fashion-MNIST (scikit-learn's digits when it
is not installed) for one epoch with the kernel and one with the reference, from the same seed
and batches, and records both loss curves and the ratio of the epoch times.

A markdown table is printed and one JSON line (with :func:`provenance.run` and the GPU's
name) appended to ``benchmarks/results.jsonl`` (``--output``).  ``--smoke`` runs tiny shapes on
the CPU in Triton's interpreter (``TRITON_INTERPRET=1`` is set for it) in a few seconds, to
check that the script works; it records nothing unless ``--output`` is given.

    python benchmarks/sampled_linear.py
    python benchmarks/sampled_linear.py --dtype bfloat16 --case compression
    python benchmarks/sampled_linear.py --epoch --batch-size 128
    python benchmarks/sampled_linear.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

MLP_SHAPES = [(b, i, o) for i, o in ((784, 300), (300, 100)) for b in (128, 512, 2048, 8192)]
LARGE_SHAPES = [(b, f, f) for f in (4096, 8192) for b in (4096, 8192)]
SMOKE_SHAPES = [(8, 16, 8), (5, 7, 3)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
METHODS = ("fused", "reference", "linear")

#: Equality tolerances, relative to the largest reference value, by dtype.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}
#: Ragged shapes for the equality check: several tiles of every config, partial edges.
EQUALITY_SHAPES = [(5, 7, 3), (129, 67, 257)]
#: Options of the equality check: each value of each option at least once, in few kernel
#: variants (each compiles for every tile config of the autotuner).  The interpreter tests
#: cover every combination.
#: (input scale, bias, output scale, scale_variance, log-variance)
EQUALITY_OPTIONS = [
    (None, None, None, True, False),
    (None, "fixed", None, True, False),
    ("example", "gaussian", "unit", True, True),
    ("unit", "gaussian", "example", False, False),
    ("example", "fixed", "example", False, True),
    ("unit", None, "unit", True, False),
]
SMOKE_EQUALITY_OPTIONS = EQUALITY_OPTIONS[1:3]


# ------------------------------------------------------------------------------------ inputs


def layer_inputs(rows, inputs, outputs, dtype, device, case="sparse-vd", requires_grad=True):
    """The tensors of one call in sparse VD's regime: He-scaled means, small variances."""
    x = torch.randn(rows, inputs, device=device)
    values = {
        "x": x,
        "weight_mean": torch.randn(outputs, inputs, device=device) * (2 / inputs) ** 0.5,
        "weight_var": torch.full((outputs, inputs), 1e-4, device=device),
        "bias_mean": torch.zeros(outputs, device=device),
        "input_scale": None,
        "output_scale": None,
    }
    if case == "compression":
        values["input_scale"] = 1 + 0.1 * torch.randn(rows, inputs, device=device)
        values["output_scale"] = 1 + 0.1 * torch.randn(outputs, device=device)
    return {
        name: None if v is None else v.to(dtype).requires_grad_(requires_grad)
        for name, v in values.items()
    }


def calls(values):
    """The three methods as functions of no arguments, each returning the layer's output."""
    from pyro_bnn.ops import fused_kernel, fused_sampled_linear, sampled_linear

    arguments = [values[name] for name in ("x", "weight_mean", "weight_var", "bias_mean")]
    options = {"input_scale": values["input_scale"], "output_scale": values["output_scale"]}

    def reference():
        with fused_kernel(False):
            return sampled_linear(*arguments, **options)

    return {
        "fused": lambda: fused_sampled_linear(*arguments, **options),
        "reference": reference,
        "linear": lambda: F.linear(values["x"], values["weight_mean"], values["bias_mean"]),
    }


# ---------------------------------------------------------------------------------- equality


def equality_inputs(rows, inputs, outputs, dtype, device, option):
    input_scale, bias, output_scale, _, log_variance = option

    def signed(*shape):  # magnitudes in [0.5, 1.5]: no variance near zero
        magnitude = torch.rand(shape, dtype=torch.float64) + 0.5
        return torch.where(torch.rand(shape) < 0.5, -magnitude, magnitude)

    variance = torch.rand(outputs, inputs, dtype=torch.float64) * 0.8 + 0.2
    values = {
        "x": signed(rows, inputs),
        "weight_mean": torch.randn(outputs, inputs, dtype=torch.float64),
        "spread": variance.log() if log_variance else variance,
        "bias_mean": None if bias is None else torch.randn(outputs, dtype=torch.float64),
        "bias_var": torch.rand(outputs, dtype=torch.float64) + 0.2 if bias == "gaussian" else None,
        "input_scale": None,
        "output_scale": None,
    }
    for name, kind, size in (("input_scale", input_scale, inputs),
                             ("output_scale", output_scale, outputs)):  # fmt: skip
        if kind is not None:
            values[name] = signed(*((rows, size) if kind == "example" else (size,)))
    return {name: None if v is None else v.to(device, dtype) for name, v in values.items()}


def output_and_gradients(values, log_variance, scale_variance, grad, noise=None, seed=0):
    """The output and the gradients of every given tensor, by the kernel, or by the reference
    when ``noise`` is given."""
    from pyro_bnn.ops import fused_sampled_linear, sampled_linear

    leaves = {n: v.detach().requires_grad_() for n, v in values.items() if v is not None}
    get = leaves.get
    if noise is None:
        spread = {"weight_log_var" if log_variance else "weight_var": get("spread")}
        out = fused_sampled_linear(
            get("x"), get("weight_mean"), bias_mean=get("bias_mean"), bias_var=get("bias_var"),
            input_scale=get("input_scale"), output_scale=get("output_scale"),
            scale_variance=scale_variance, seed=seed, **spread,
        )  # fmt: skip
    else:
        variance = get("spread").exp() if log_variance else get("spread")
        out = sampled_linear(
            get("x"), get("weight_mean"), variance, get("bias_mean"), get("bias_var"),
            get("input_scale"), noise, output_scale=get("output_scale"),
            scale_variance=scale_variance,
        )  # fmt: skip
    grads = torch.autograd.grad(out, list(leaves.values()), grad)
    return [out, *grads]


def check_equality(device, dtypes, shapes, options) -> dict:
    """Kernel against reference given the same noise; the worst error of any output or
    gradient, in units of its tolerance (at most 1 to pass), per dtype."""
    from pyro_bnn.ops import fused_noise

    worst = {}
    for dtype, shape, option in itertools.product(dtypes, shapes, options):
        values = equality_inputs(*shape, dtype, device, option)
        rows, _, outputs = shape
        grad = torch.randn(rows, outputs, dtype=torch.float64).to(device, dtype)
        actual = output_and_gradients(values, option[4], option[3], grad, seed=3)
        noise = fused_noise(rows, outputs, seed=3, device=device).double()
        wide = {n: None if v is None else v.double() for n, v in values.items()}
        expected = output_and_gradients(wide, option[4], option[3], grad.double(), noise)
        tol = TOLERANCE[dtype]
        for a, e in zip(actual, expected, strict=True):
            bound = tol * (e.abs() + e.abs().max())
            error = ((a.double() - e).abs() / bound).max().item() if e.numel() else 0.0
            name = str(dtype).removeprefix("torch.")
            worst[name] = max(worst.get(name, 0.0), error)
    return {
        "passed": all(error <= 1 for error in worst.values()),
        "worst_error_in_tolerances": worst,
        "cases": len(dtypes) * len(shapes) * len(options),
    }


# ------------------------------------------------------------------------------------ timing


def cuda_bench(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def cpu_bench(fn, repeats: int = 2) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def peak_extra_mib(fn, device) -> float | None:
    """The most memory ``fn`` allocates beyond what exists when it starts (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure(shape, dtype, device, case) -> dict:
    values = layer_inputs(*shape, dtype, device, case)
    leaves = [v for v in values.values() if v is not None]
    grad = torch.randn(shape[0], shape[2], device=device, dtype=dtype)
    bench = cuda_bench if device.type == "cuda" else cpu_bench
    result = {}
    for method, call in calls(values).items():
        used = leaves if method != "linear" else [values["x"], values["weight_mean"]]

        def forward(call=call):
            call()

        def forward_backward(call=call, used=used):
            torch.autograd.grad(call(), used, grad)

        forward_backward()  # compiles and tunes the kernel for this shape before timing
        result[method] = {
            "forward_ms": bench(forward),
            "forward_backward_ms": bench(forward_backward),
            "forward_peak_mib": peak_extra_mib(forward, device),
            "forward_backward_peak_mib": peak_extra_mib(forward_backward, device),
        }
    for key in ("forward_ms", "forward_backward_ms"):
        fused, reference, linear = (result[m][key] for m in METHODS)
        result[f"{key.removesuffix('_ms')}_fused_over_reference"] = fused / reference
        result[f"{key.removesuffix('_ms')}_fused_over_linear"] = fused / linear
        result[f"{key.removesuffix('_ms')}_reference_over_linear"] = reference / linear
    return result


def table(rows: list[dict]) -> str:
    def mib(value):
        return "-" if value is None else f"{value:.0f}"

    lines = [
        "| dtype | B | in -> out | fwd ms fused / ref / linear | fwd+bwd ms fused / ref / "
        "linear | fused/ref fwd, fwd+bwd | peak MiB fwd+bwd fused / ref / linear |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["result"]
        forward = " / ".join(f"{r[m]['forward_ms']:.3f}" for m in METHODS)
        both = " / ".join(f"{r[m]['forward_backward_ms']:.3f}" for m in METHODS)
        peak = " / ".join(mib(r[m]["forward_backward_peak_mib"]) for m in METHODS)
        ratios = (
            f"{r['forward_fused_over_reference']:.2f}, "
            f"{r['forward_backward_fused_over_reference']:.2f}"
        )
        rows_, inputs, outputs = row["shape"]
        lines.append(
            f"| {row['dtype']} | {rows_} | {inputs} -> {outputs} | {forward} | {both} | "
            f"{ratios} | {peak} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- epoch


def epoch_comparison(
    device, batch_size: int, seed: int, max_steps: int | None, data: str | None = None
) -> dict:
    """One epoch of sparse-VD LeNet-300-100 with the kernel and one with the reference, on
    ``data`` (by default Fashion-MNIST, or the digits when it is not installed)."""
    import pyro

    from pyro_bnn.data import load_dataset
    from pyro_bnn.guides import AutoMeanFieldNormal
    from pyro_bnn.infer import TraceKL_ELBO
    from pyro_bnn.infer.fit import default_optimizer
    from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, lenet_300_100
    from pyro_bnn.ops import fused_kernel

    name = data or ("fashion-mnist" if os.path.isdir(FASHION_MNIST) else "digits")
    splits = load_dataset(name)
    in_features = int(torch.tensor(splits.input_shape).prod())
    # Full batches only (one shape to tune), preloaded on the device: the data pipeline is not
    # what is compared.
    loader = DataLoader(
        splits.train, batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    batches = [(x.to(device), y.to(device)) for x, y in itertools.islice(loader, steps)]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = {"data": name, "batch_size": batch_size, "steps": steps}
    for variant in ("fused", "reference"):
        pyro.set_rng_seed(seed)
        pyro.clear_param_store()
        with torch.device(device):
            model = BayesianNetwork(
                lenet_300_100(in_features, 10),
                CategoricalLikelihood(len(splits.train), 10),
                input_shape=splits.input_shape,
            ).to(device)
            guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
            guide(*batches[0])
        guide.to(device)
        parameters = list(model.parameters()) + list(guide.parameters())
        optimizer = default_optimizer(parameters, lr=1e-3)
        elbo = TraceKL_ELBO()
        with fused_kernel(variant == "fused"), _kernel_on(device, variant == "fused"):
            if device.type == "cuda":
                # One untimed loss and backward (no step): the kernels compile and tune here.
                elbo.differentiable_loss(model, guide, *batches[0]).backward()
                optimizer.zero_grad(set_to_none=True)
            pyro.set_rng_seed(seed)
            losses = []
            synchronize()
            started = time.perf_counter()
            for x, y in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = elbo.differentiable_loss(model, guide, x, y)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
            synchronize()
            seconds = time.perf_counter() - started
        result[variant] = {"seconds": seconds, "loss": torch.stack(losses).tolist()}
    fused, reference = (result[variant]["seconds"] for variant in ("fused", "reference"))
    result["time_fused_over_reference"] = fused / reference
    return result


def _kernel_on(device, fused: bool):
    """On the CPU (the smoke run), widen ``sampled_linear``'s dispatch to CPU tensors, so that
    the guide's layers run the kernel (in Triton's interpreter) as they would on CUDA."""
    if device.type == "cuda" or not fused:
        return contextlib.nullcontext()
    from pyro_bnn.ops import fused_linear

    def applies(*arguments):
        return fused_linear.fused_kernel_enabled() and fused_linear.fused_kernel_supports(
            *arguments
        )

    module = sys.modules["pyro_bnn.ops.sampled_linear"]  # the module, not the function
    return mock.patch.object(module, "fused_kernel_applies", applies)


# -------------------------------------------------------------------------------------- main


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), nargs="+", default=["float32", "bfloat16"]
    )
    parser.add_argument("--case", choices=["sparse-vd", "compression"], default="sparse-vd")
    parser.add_argument(
        "--shapes", choices=["all", "mlp", "large"], default="all", help="which shapes to time"
    )
    parser.add_argument("--skip-equality", action="store_true", help="time only")
    parser.add_argument("--epoch", action="store_true", help="the one-epoch training comparison")
    parser.add_argument("--batch-size", type=int, default=128, help="for --epoch (default 128)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="for --epoch: stop the epoch early"
    )
    parser.add_argument("--seed", type=int, default=0)
    provenance.add_record_options(
        parser, "tiny shapes on the CPU in Triton's interpreter: checks that it runs"
    )
    options = parser.parse_args(argv)
    if options.batch_size < 1:
        parser.error("--batch-size must be a positive integer")
    if options.max_steps is not None and options.max_steps < 1:
        parser.error("--max-steps must be a positive integer")
    return options


def machine(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return provenance.machine(torch.get_num_threads()) + ", Triton's interpreter"


def main(argv: list[str] | None = None) -> dict:
    options = parse_arguments(argv)
    if options.smoke:
        # Set before the kernels' module is imported: it decides how they are built.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("a GPU is needed (or --smoke, which runs tiny shapes on the CPU)")
    from pyro_bnn.ops import triton_sampled_linear  # fails clearly without Triton

    if device.type == "cpu" and not triton_sampled_linear.INTERPRETING:
        raise SystemExit("Triton was imported before TRITON_INTERPRET=1 could be set")
    run = provenance.run("sampled_linear.py", argv, torch.get_num_threads())
    run["machine"] = machine(device)
    torch.manual_seed(options.seed)
    dtypes = [DTYPES[name] for name in options.dtype]
    record = {"benchmark": "sampled_linear", **run, "smoke": options.smoke, "case": options.case}

    print(f"sampled_linear: fused Triton kernel vs torch reference; {run['machine']}, "
          f"commit {run['commit']}, {run['date']}\n")  # fmt: skip
    if not options.skip_equality:
        equality = check_equality(
            device,
            [torch.float32] if options.smoke else list(TOLERANCE),
            EQUALITY_SHAPES[:1] if options.smoke else EQUALITY_SHAPES,
            SMOKE_EQUALITY_OPTIONS if options.smoke else EQUALITY_OPTIONS,
        )
        record["equality"] = equality
        worst = ", ".join(f"{k} {v:.2f}" for k, v in equality["worst_error_in_tolerances"].items())
        verdict = "PASSED" if equality["passed"] else "FAILED"
        print(f"Equality with the reference given the same noise ({equality['cases']} cases): "
              f"{verdict} (worst error in tolerances: {worst})\n")  # fmt: skip

    if options.epoch:
        epoch = epoch_comparison(
            device,
            4 if options.smoke else options.batch_size,
            options.seed,
            1 if options.smoke else options.max_steps,
            "digits" if options.smoke else None,  # 64 inputs: quick in the interpreter
        )
        record["epoch"] = epoch
        print(
            f"One epoch of sparse-VD LeNet-300-100 on {epoch['data']} ({epoch['steps']} step(s) of "
            f"{epoch['batch_size']}): fused {epoch['fused']['seconds']:.2f} s, reference "
            f"{epoch['reference']['seconds']:.2f} s, ratio "
            f"{epoch['time_fused_over_reference']:.2f}; last loss fused "
            f"{epoch['fused']['loss'][-1]:.1f}, reference {epoch['reference']['loss'][-1]:.1f}\n"
        )
    else:
        if options.smoke:
            shapes = SMOKE_SHAPES
        else:
            shapes = {"mlp": MLP_SHAPES, "large": LARGE_SHAPES}.get(
                options.shapes, MLP_SHAPES + LARGE_SHAPES
            )
        rows = []
        for dtype, shape in itertools.product(dtypes[:1] if options.smoke else dtypes, shapes):
            name = str(dtype).removeprefix("torch.")
            rows.append({"dtype": name, "shape": list(shape),
                         "result": measure(shape, dtype, device, options.case)})  # fmt: skip
            if device.type == "cuda":
                torch.cuda.empty_cache()
        record["timings"] = rows
        print(table(rows))

    provenance.append_record(record, options.output, options.smoke)
    return record


if __name__ == "__main__":
    main()
