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
