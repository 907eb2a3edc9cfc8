"""``--device``: checked before any model is loaded, with a message that says what to do."""

from __future__ import annotations

from mgm_omni.cli.common import CLIError


def check_device(device: str) -> None:
    """Raise :class:`CLIError` unless ``device`` names a torch device that this machine and torch build have."""
    if device == "cpu":
        return  # the default: no need to import torch before the command does
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise CLIError(f"--device {device}: this torch build ({torch.__version__}) has no CUDA support. "
                           "Use --device cpu, or install a CUDA build of torch to run on a GPU.")
        if not torch.cuda.is_available():
            raise CLIError(f"--device {device}: no CUDA GPU is usable here (torch {torch.__version__} finds "
                           "none; check the driver and CUDA_VISIBLE_DEVICES), or use --device cpu.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise CLIError(f"--device {device}: this machine has {count} CUDA GPU(s), numbered 0-{count - 1}.")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"--device {device}: Apple MPS is not available in this torch build or on this machine; "
                           "use --device cpu.")
        return
    raise CLIError(f"--device {device}: {dev.type} devices are not supported; use cpu or cuda.")
