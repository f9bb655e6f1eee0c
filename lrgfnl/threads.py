"""One thread for the many small transforms of a campaign: at nside <= 256 a HEALPix transform is
a few milliseconds, and OpenMP/BLAS threads contending on a busy machine make it 10-30x slower."""
from contextlib import contextmanager


@contextmanager
def one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@contextmanager
def torch_one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
