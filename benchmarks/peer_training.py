"""CPU training speed against the peers: the peer benchmark's run, with the weight-sampled
estimator of our mean-field guide added beside the peers' weight-sampled networks.

The peer benchmark (a script kept outside this repository, given with ``--peers``) times, in
one interleaved run, an epoch of LeNet-300-100 on Fashion-MNIST for each variant divided by
the neighbouring plain PyTorch epochs: ``pyro_bnn.fit`` with local reparameterization, the
project's hand-written eager floor (``benchmarks/training_cost.py``), Pyro's ``AutoNormal``,
bayesian-torch, BLiTZ and TyXe.  This script registers two more variants and runs it:

- ``ours-fit-ws``: ``fit`` with ``AutoMeanFieldNormal(..., local_reparameterization=False)``,
  one weight sample per step shared by the batch, the log-uniform prior of sparse VD;
- ``ours-fit-ws-N01``: the same with the ``Normal(0, 1)`` prior the peers use.

Then it reads the run's results and reports the two targets of the CPU-training work:
``fit`` (LRT) over the eager floor, paired within each repetition, and our weight-sampled
epochs against the peers' weight-sampled ones (bayesian-torch, BLiTZ, Pyro's AutoNormal).
Run it with the peers' environment (the peers must never be installed into the project's)::

    python benchmarks/peer_training.py --peers PATH/peers.py -- --reps 5 --batch-sizes 128 512

Arguments after ``--`` go to the peer benchmark (``--pred-reps 0 --pred-methods`` are added:
prediction is measured elsewhere).  One JSON line goes to ``benchmarks/results.jsonl``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402

#: Peers that, like ``ours-fit-ws*``, draw one weight sample per step.
WEIGHT_SAMPLED_PEERS = ("bt", "blitz", "pyro")
OURS_WEIGHT_SAMPLED = ("ours-fit-ws", "ours-fit-ws-N01")


def load_peers(path: str):
    """The peer benchmark as a module (it imports the peers and this project on load)."""
    spec = importlib.util.spec_from_file_location("peer_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def add_weight_sampled_variants(peers) -> None:
    """Register ``ours-fit-ws`` and ``ours-fit-ws-N01`` with the peer benchmark."""
    from pyro_bnn.guides import AutoMeanFieldNormal
    from pyro_bnn.infer.fit import default_optimizer

    class OursWeightSampled(peers.OursFit):
        name = "ours-fit-ws"
        description = (
            "as ours-fit, with AutoMeanFieldNormal(local_reparameterization=False): one weight "
            "sample per step"
        )

        def __init__(self, x0, y0):
            self.model, _ = peers._ours_model(self.prior)
            self.guide = AutoMeanFieldNormal(
                self.model, pretrained=self.model.initial_values, local_reparameterization=False
            )
            with peers.STORE.scope():
                self.guide(x0, y0)
            parameters = list(self.model.parameters()) + list(self.guide.parameters())
            self.opt = default_optimizer(parameters, lr=peers.LR)
            self.fit_seconds = []

    class OursWeightSampledNormal(OursWeightSampled):
        name = "ours-fit-ws-N01"
        description = "as ours-fit-ws with the Normal(0, 1) prior of the peers"
        prior = staticmethod(peers.normal_prior(1.0))

    extra = {cls.name: cls for cls in (OursWeightSampled, OursWeightSampledNormal)}
    build = peers.build_variants

    def build_variants(names, x0, y0, x0_flat):
        made = build([n for n in names if n not in extra], x0, y0, x0_flat)
        made.update({n: extra[n](x0, y0) for n in names if n in extra})
        return {n: made[n] for n in names}

    peers.build_variants = build_variants
    peers.VARIANT_ORDER = [*peers.VARIANT_ORDER, *extra]


def paired_ratio(rows: list[dict], numerator: str, denominator: str) -> list[float]:
    """``numerator``'s epoch over ``denominator``'s within each repetition."""
    return [r["seconds"][numerator] / r["seconds"][denominator] for r in rows]


def targets(training: dict) -> dict:
    """The CPU-training targets per batch size, from the peer benchmark's ``training``."""
    report = {}
    for batch_size, block in training.items():
        rows, summary = block["rows"], block["summary"]
        entry = {"ratio_to_plain": {n: s["ratio_median"] for n, s in summary.items()}}
        if {"ours-fit", "ours-eager"} <= summary.keys():
            pairs = paired_ratio(rows, "ours-fit", "ours-eager")
            entry["fit_over_eager_median"] = statistics.median(pairs)
            entry["fit_over_eager"] = pairs
        for ours in OURS_WEIGHT_SAMPLED:
            if ours not in summary:
                continue
            entry[ours] = {
                peer: statistics.median(paired_ratio(rows, ours, peer))
                for peer in WEIGHT_SAMPLED_PEERS
                if peer in summary
            }
        report[batch_size] = entry
    return report


def table(report: dict) -> str:
    """Markdown: each variant's epoch over the plain epoch, per batch size."""
    sizes = list(report)
    names = list(report[sizes[0]]["ratio_to_plain"])
    lines = [
        "| variant | " + " | ".join(f"batch {b}" for b in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in names:
        cells = [f"{report[b]['ratio_to_plain'].get(name, float('nan')):.2f}" for b in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ours, theirs = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", required=True, help="the peer benchmark script")
    parser.add_argument("--output", default=provenance.RESULTS, help="JSON lines to append to")
    options = parser.parse_args(ours)
    if not os.path.isfile(options.peers):
        parser.error(f"--peers: no file {options.peers}")
    record = provenance.run("peer_training.py", argv, threads=_threads(theirs))
    peers = load_peers(options.peers)
    add_weight_sampled_variants(peers)
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "peers.json")
        sys.argv = [options.peers, *theirs, "--pred-reps", "0", "--pred-methods", "--out", out]
        peers.main()
        with open(out) as file:
            result = json.load(file)
    report = targets(result["training"])
    print(table(report))
    print(json.dumps({b: {k: v for k, v in e.items() if k != "ratio_to_plain"}
                      for b, e in report.items()}, indent=1))  # fmt: skip
    line = {
        "benchmark": "peer_training",
        **record,
        "environment": result["environment"],
        "descriptions": result["descriptions"],
        "targets": report,
        "training": {b: block["summary"] for b, block in result["training"].items()},
        "test_accuracy_one_sample": result.get("test_accuracy_one_sample"),
    }
    with open(options.output, "a") as file:
        file.write(json.dumps(line) + "\n")
    return line


def _threads(argv: list[str]) -> int:
    # The peer benchmark's own default is 2.
    return int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 2


if __name__ == "__main__":
    main()
