import os

import numpy as np
import pyro
import pytest
import torch

# Without CUDA, Triton kernels run in Triton's interpreter, which reads this variable when a
# kernel is decorated: set it before anything imports Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pyro_bnn.data import write_idx  # noqa: E402


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state and an empty parameter store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture
def interruptible():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the test run itself was
    started with SIGINT ignored (a background job of a non-interactive shell)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def pytest_configure(config):
    # The tests use small tensors, for which a second thread costs more in synchronization than
    # it saves, and it makes timings erratic on a busy machine.
    torch.set_num_threads(1)


@pytest.fixture
def write_mnist_files():
    """
    A function writing a small copy of the MNIST layout: both splits, ``num_images`` random
    28x28 images each, labels cycling through 0..9 unless given.
    """

    def write(directory, num_images=12, gz=True, train_labels=None):
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        suffix = ".gz" if gz else ""
        for prefix in ("train", "t10k"):
            images = rng.integers(0, 256, size=(num_images, 28, 28), dtype=np.uint8)
            labels = np.arange(num_images, dtype=np.uint8) % 10
            if prefix == "train" and train_labels is not None:
                labels = np.asarray(train_labels, dtype=np.uint8)
            write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
            write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        return directory

    return write
