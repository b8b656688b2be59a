"""The sparse-VD KL of a 300 x 784 layer, forward and backward: the fused autograd function
(``sparse_vd_kl_normal``) vs. the same formula written with ordinary tensor operations.

Interleaved in one process; prints the median times and their ratio.

    python benchmarks/kl_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_bnn.distributions.kl import sparse_vd_kl, sparse_vd_kl_normal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    loc = (torch.randn(300, 784) * 0.05).requires_grad_()
    log_variance = torch.full((300, 784), -9.0, requires_grad=True)

    def autograd_form():
        scale = (0.5 * log_variance).exp()
        tiny = torch.finfo(loc.dtype).tiny
        log_alpha = 2 * scale.log() - (loc.square() + tiny).log()
        sparse_vd_kl(log_alpha).sum().backward()

    def fused():
        sparse_vd_kl_normal(loc, log_variance).sum().backward()

    times = {autograd_form: [], fused: []}
    for _ in range(options.repeats):
        for function, record in times.items():
            started = time.perf_counter()
            function()
            record.append(time.perf_counter() - started)
    plain, ours = (statistics.median(record) for record in times.values())
    print(
        f"autograd form {1e3 * plain:.2f} ms, fused {1e3 * ours:.2f} ms, ratio {plain / ours:.2f}"
    )


if __name__ == "__main__":
    main()
