"""The one device resolver: every library function and command turns its ``device`` argument
into a ``torch.device`` here, so the default and the error messages are the same everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from singledir.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]

_KINDS = "use cpu, cuda or cuda:N (or auto)"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None or ``"auto"`` -> CUDA if available, else CPU.

    An unknown name, a CUDA device when no GPU is visible, or a GPU index beyond those present
    is an :class:`~singledir.errors.InputError` that says what to pass instead.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device).strip().lower())
        except (RuntimeError, TypeError, ValueError):
            raise InputError(f"unknown device {device!r}: {_KINDS}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"device {str(dev)!r} asked for but no CUDA GPU is visible: use --device cpu "
                "(or device='cpu')"
            )
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"device {str(dev)!r} asked for but only {count} CUDA GPU(s) are visible: "
                f"use cuda:0..cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise InputError("device 'mps' asked for but MPS is not available: use --device cpu")
        return dev
    raise InputError(f"unsupported device {device!r}: {_KINDS}")
