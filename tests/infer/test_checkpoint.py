import os
import pickle

import pytest
import torch

from pyro_bnn.infer import (
    CheckpointMismatchError,
    fit,
    load_checkpoint,
    save_checkpoint,
)

from .common import classification_problem, parameters


def _trained(tmp_path, **kwargs):
    model, guide, loader, _, _ = classification_problem(**kwargs)
    path = tmp_path / "checkpoint.pt"
    fit(model, guide, loader, epochs=2, lr=1e-2, checkpoint=path, progress=False)
    return model, guide, loader, path


def test_checkpoint_round_trip(tmp_path):
    model, guide, loader, path = _trained(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 2 and len(payload["history"]) == 2
    fresh_model, fresh_guide, _, x, y = classification_problem()
    fresh_guide(x[:2], y[:2])
    optimizer = torch.optim.Adam(list(fresh_model.parameters()) + list(fresh_guide.parameters()))
    state = load_checkpoint(path, model=fresh_model, guide=fresh_guide, optimizer=optimizer)
    assert state["epoch"] == 2
    expected, loaded = parameters(model, guide), parameters(fresh_model, fresh_guide)
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    assert optimizer.state  # Adam's moments came back


def test_checkpoint_of_another_architecture_is_rejected_before_loading(tmp_path):
    _, _, _, path = _trained(tmp_path)
    other_model, other_guide, _, x, y = classification_problem(in_features=5)
    other_guide(x[:2], y[:2])
    before = parameters(other_model, other_guide)
    with pytest.raises(CheckpointMismatchError, match=r"shape \(16, 6\) in the checkpoint"):
        load_checkpoint(path, model=other_model, guide=other_guide)
    after = parameters(other_model, other_guide)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_loading_needs_a_set_up_guide(tmp_path):
    _, _, _, path = _trained(tmp_path)
    model, guide, _, _, _ = classification_problem()
    with pytest.raises(RuntimeError, match="call it once"):
        load_checkpoint(path, model=model, guide=guide)


def test_files_that_are_not_checkpoints(tmp_path):
    model, guide, _, x, y = classification_problem()
    guide(x[:2], y[:2])
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="is not a pyro-bnn checkpoint"):
        load_checkpoint(plain, model=model, guide=guide)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", model=model, guide=guide)


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_loading_never_runs_code(tmp_path):
    model, guide, _, x, y = classification_problem()
    guide(x[:2], y[:2])
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as file:
        pickle.dump({"format": "pyro-bnn-checkpoint/1", "x": payload}, file)
    with pytest.raises(ValueError, match="not a readable pyro-bnn checkpoint"):
        load_checkpoint(path, model=model, guide=guide)
    assert not (tmp_path / "pwned").exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    model, guide, _, path = _trained(tmp_path)
    original = path.read_bytes()

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, guide=guide)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]
