import platform

import pytest

from spkid.core.memory import keep_large_blocks_mapped


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_mmap_threshold_is_fixed_on_glibc():
    assert keep_large_blocks_mapped() is True
