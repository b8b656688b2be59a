import platform
import warnings

import pytest
import torch
from torch import nn

from pyro_bnn.compression import save_exported, speed_up, timing

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_speed_up_times_both_networks_in_a_fresh_process():
    # A ReLU over a 64 MiB batch: above glibc's largest dynamic mmap threshold (32 MiB), so with
    # the default allocator every pass maps fresh pages for its output and faults on each of
    # them.
    original, exported = nn.ReLU(), nn.Identity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = speed_up(original, exported, (16384,), batch=1024, repeats=3, threads=1)
    assert (result["batch"], result["repeats"], result["threads"]) == (1024, 3, 1)
    assert result["original_seconds"] > 0 and result["exported_seconds"] > 0
    assert result["speed_up"] == result["original_seconds"] / result["exported_seconds"]
    default = result["default_allocator"]
    assert result["speed_up_over_as_given"] == (
        result["as_given_seconds"] / result["exported_seconds"]
    )
    assert set(default) == {
        "original_seconds",
        "as_given_seconds",
        "exported_seconds",
        "speed_up",
        "speed_up_over_as_given",
        "page_faults",
    }
    if GLIBC:
        assert result["allocator"] == "steady"
        pages = 1024 * 16384 * 4 // 4096
        assert default["page_faults"]["original"] >= 0.9 * pages
        # glibc usually reuses the freed block then, but not always; a steady timing that
        # still faulted says so.
        faulted = max(result["page_faults"].values()) >= timing._FAULT_WARNING_PAGES
        assert faulted == any("still page-faulted" in str(w.message) for w in caught)
    # The caller's network is not moved to another memory layout.
    assert isinstance(original, nn.ReLU)


def test_speed_up_keeps_the_callers_layout():
    conv = nn.Conv2d(1, 2, 3)
    speed_up(conv, nn.Conv2d(1, 2, 3), (1, 8, 8), batch=2, repeats=1, threads=1)
    assert conv.weight.is_contiguous()


def test_speed_up_loads_a_saved_program_in_the_timing_process(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    path = tmp_path / "net.pt2"
    save_exported(net, path, torch.zeros(2, 1, 8, 8))
    result = speed_up(net, path, (1, 8, 8), batch=4, repeats=2, threads=1)
    assert result["speed_up"] > 0
    with pytest.raises(FileNotFoundError, match="no saved exported network"):
        speed_up(net, tmp_path / "missing.pt2", (1, 8, 8))


@pytest.fixture
def in_this_process(monkeypatch):
    """Run the timing here instead of in a spawned process (with mallopt left alone), restoring
    the torch threads it sets; returns a ``speed_up`` of two ReLUs."""
    monkeypatch.setattr(timing, "_in_fresh_process", lambda function, *args: function(*args))
    threads = torch.get_num_threads()
    yield lambda: speed_up(nn.ReLU(), nn.ReLU(), (3,), batch=2, repeats=1, threads=1)
    torch.set_num_threads(threads)


def test_speed_up_warns_where_memory_cannot_be_kept(monkeypatch, in_this_process):
    # Without glibc's mallopt the timing is the default allocator's, and the caller is told.
    monkeypatch.setattr(timing, "_raise_glibc_thresholds", lambda: False)
    with pytest.warns(RuntimeWarning, match="default allocator"):
        result = in_this_process()
    assert result["allocator"] == "default"
    assert {key: result[key] for key in result["default_allocator"]} == result["default_allocator"]


def test_speed_up_warns_when_the_steady_timing_still_faults(monkeypatch, in_this_process):
    counter = iter(range(0, 10**6, 300))
    monkeypatch.setattr(timing, "_minor_faults", lambda: next(counter))
    monkeypatch.setattr(timing, "_raise_glibc_thresholds", lambda: True)
    with pytest.warns(RuntimeWarning, match="still page-faulted"):
        result = in_this_process()
    assert result["allocator"] == "steady" and result["page_faults"]["original"] == 300


@pytest.mark.parametrize("option", ["batch", "repeats", "threads"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_speed_up_rejects_bad_counts(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a positive integer"):
        speed_up(nn.ReLU(), nn.ReLU(), (3,), **{option: value})


def test_speed_up_refuses_an_original_fx_cannot_trace():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="cannot be traced by torch.fx"):
        speed_up(DataDependent(), nn.Identity(), (3,), batch=2, repeats=1, threads=1)
