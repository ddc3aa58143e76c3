"""Turn a device setting ("auto", "cpu", "cuda", "cuda:N") into a ``torch.device``."""

from __future__ import annotations

import re

import torch

from ._validation import ConfigError, PartlearnError


def resolve_device(device="auto") -> torch.device:
    """``auto`` is the first CUDA device when one is usable, else the CPU.

    Asking for CUDA on a machine without a usable CUDA device, or for a device
    index it does not have, raises ``PartlearnError``.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device={device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PartlearnError(
            f"device={device!r} was asked for but CUDA is not available here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
            "use device='cpu' or 'auto'"
        )
    dev = torch.device(device)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise PartlearnError(
            f"device={device!r} was asked for but this machine has {count} CUDA "
            f"device(s): cuda:0..cuda:{count - 1}"
        )
    return dev


_HEAP_KEPT = False


def keep_heap_for_cpu_activations() -> bool:
    """Let glibc serve the backbone's large activation buffers from its heap and keep
    them there between forward passes (``mallopt``: mmap and trim thresholds 1 GiB).

    By default every buffer above 32 MB is a fresh ``mmap`` that the kernel zeroes page
    by page and unmaps when freed: at short side 672 that is most of a CPU forward pass
    (EfficientNet-Lite0: 0.61 s, 0.55 s of it in the kernel, against 0.24 s with the
    heap kept; BENCHMARKS "Region features"). Once per process, on glibc only, and not
    where the user set malloc's thresholds (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``). Returns whether it was set now.
    """
    global _HEAP_KEPT
    import ctypes
    import os

    if _HEAP_KEPT or any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_",
                                                   "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    _HEAP_KEPT = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30))
