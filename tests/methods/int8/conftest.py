import pytest

from hf_compress.methods.int8 import kernels
from hf_compress.methods.int8.fbgemm import fbgemm_available


@pytest.fixture
def use_w8a8_kernel():
    """``use_w8a8_kernel(name)`` switches the CPU W8A8 matmul for one test (skips where it is missing)."""
    before = kernels.w8a8_kernel()

    def use(name: str) -> str:
        if name == "fbgemm" and not fbgemm_available():
            pytest.skip("this torch has no fbgemm engine")
        return kernels.set_w8a8_kernel(name)

    yield use
    kernels._CPU_KERNEL = before  # directly: a test may have patched fbgemm_available
