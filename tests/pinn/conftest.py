import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared: torch's two-thread kernels then spin against other
    # processes and run 10x slower than one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
