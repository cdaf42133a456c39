"""The ``kernel_path`` fixture: a test runs once on each CPU path, the fused numba kernels and the plain numpy code.

Use it in a module with ``from kernel_paths import kernel_path`` and
``pytestmark = pytest.mark.usefixtures("kernel_path")`` (every test), or name it in a test.
The numba case is skipped where numba cannot import.
"""
import pytest

from attnseq.nn import kernels

PATHS = ("numba", "numpy")


@pytest.fixture(params=PATHS)
def kernel_path(request):
    """The path forced for this test ("numba" or "numpy"); the one before comes back after it."""
    if request.param == "numba":
        pytest.importorskip("numba")
    with kernels.using(request.param):
        yield request.param
