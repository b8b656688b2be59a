import pyro
import pytest


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state and an empty parameter store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
