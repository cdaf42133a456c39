import numpy as np
import pytest


def _gpu_count() -> int:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


HAS_GPU = _gpu_count() > 0
gpu_only = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="no CUDA device (cupy missing or 0 devices)")]


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=gpu_only)])
def xp(request):
    """The array module under test: numpy always, cupy where a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy
    return cupy


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=gpu_only)])
def device(request):
    return request.param
