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


TINY = ["--tokenizer", "char", "--epochs", "2", "--hidden-size", "32", "--wordvec-size", "8", "--batch-size", "64", "--lr", "0.01",
        "--eval-batch-size", "128", "--examples", "1", "--no-plot"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small date dataset directory (train 1500 / valid 200 / test 200 pairs)."""
    from helpers import write_date_splits
    return write_date_splits(tmp_path_factory.mktemp("tiny_date"), 99, {"train": 1500, "valid": 200, "test": 200})


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A run trained for two epochs through the CLI."""
    from attnseq.cli import main
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY]) == 0
    return out
