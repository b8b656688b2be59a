import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state and an empty parameter store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


def pytest_configure(config):
    # The tests use small tensors, for which a second thread costs more in synchronization than
    # it saves, and it makes timings erratic on a busy machine.
    torch.set_num_threads(1)
