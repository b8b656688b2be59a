"""The peer-training report: its pairing of epochs and its refusal of a missing script."""

import pytest

from .benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def script():
    return load_benchmark("peer_training")


def test_targets_pair_epochs_within_each_repetition(script):
    rows = [
        {"seconds": {"ours-fit": 1.1, "ours-eager": 1.0, "ours-fit-ws": 2.0, "bt": 2.5}},
        {"seconds": {"ours-fit": 2.4, "ours-eager": 2.0, "ours-fit-ws": 4.0, "bt": 4.0}},
        {"seconds": {"ours-fit": 3.15, "ours-eager": 3.0, "ours-fit-ws": 3.0, "bt": 6.0}},
    ]
    names = ["ours-fit", "ours-eager", "ours-fit-ws", "bt"]
    summary = {name: {"ratio_median": float(i)} for i, name in enumerate(names)}
    report = script.targets({"128": {"rows": rows, "summary": summary}})["128"]
    assert report["fit_over_eager"] == pytest.approx([1.1, 1.2, 1.05])
    assert report["fit_over_eager_median"] == pytest.approx(1.1)
    # Against each weight-sampled peer that ran (here only bayesian-torch): 0.8, 1.0, 0.5.
    assert report["ours-fit-ws"] == {"bt": pytest.approx(0.8)}
    assert "ours-fit-ws-N01" not in report
    assert "| ours-fit-ws | 2.00 |" in script.table({"128": report})


def test_a_missing_peer_script_is_refused(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["--peers", str(tmp_path / "absent.py"), "--", "--reps", "1"])
    assert "no file" in capsys.readouterr().err
