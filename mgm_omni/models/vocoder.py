"""Pieces shared by the mel vocoders (HiFT in ``hift.py``, HiFi-GAN V1 in ``hifigan.py``).

Both are HiFi-GAN style generators: transposed-conv upsampling followed by multi-receptive-field
residual blocks whose convolutions were trained with weight normalisation. Our modules hold plain
conv weights; :func:`fold_weight_norm` turns a checkpoint's ``(g, v)`` pairs into those weights once
at load time, so inference does not recompute ``g * v / ||v||`` on every call.
"""

from __future__ import annotations

import torch
from torch import nn

from mgm_omni.checkpoint import CheckpointError

# Weight-norm parameter names: torch >= 2.1 parametrizations (CosyVoice2 ``hift.pt``) and the
# older ``torch.nn.utils.weight_norm`` hooks (HiFi-GAN V1 ``generator_*.pth.tar``).
_WEIGHT_NORM_SUFFIXES = {
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
    ".weight_g": "g",
    ".weight_v": "v",
}


class VocoderError(ValueError):
    """A vocoder input (mel spectrogram, source cache) is malformed."""


def conv_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding for an odd kernel: output length equals input length."""
    return (kernel_size * dilation - dilation) // 2


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm ``(g, v)`` pairs by the plain ``<module>.weight`` they stand for.

    Accepts both ``<m>.parametrizations.weight.original0/1`` and ``<m>.weight_g/_v``. The norm is
    taken over every dim but 0, as ``weight_norm(dim=0)`` does for Conv1d and ConvTranspose1d
    alike, using the same kernel (``torch._weight_norm``) so results are bit-identical to the
    parametrised module. Works on ``meta`` tensors (shape checks without weights).

    Raises:
        CheckpointError: a ``g`` without its ``v`` (or the reverse), or a name with both forms.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for suffix, role in _WEIGHT_NORM_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[role] = tensor
                break
        else:
            out[key] = tensor
    for prefix, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise CheckpointError(f"weight norm of {prefix!r}: found only {sorted(gv)}, need both g and v")
        name = prefix + ".weight"
        if name in out:
            raise CheckpointError(f"{name!r} is given both plainly and as weight-norm g/v")
        out[name] = torch._weight_norm(gv["v"], gv["g"], 0)
    return out


def check_mel(mel: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Validate a log-mel input and return it as a float (B, n_mels, T) tensor.

    Accepts (n_mels, T) for a single utterance.

    Raises:
        VocoderError: not a floating tensor, wrong rank or mel count, no frames, or NaN/inf values.
    """
    if not isinstance(mel, torch.Tensor):
        raise VocoderError(f"mel must be a torch.Tensor, got {type(mel).__name__}")
    if not mel.is_floating_point():
        raise VocoderError(f"mel must be a floating-point tensor, got {mel.dtype}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3:
        raise VocoderError(f"mel must be (B, {n_mels}, T) or ({n_mels}, T), got shape {tuple(mel.shape)}")
    if mel.shape[1] != n_mels:
        raise VocoderError(
            f"mel has {mel.shape[1]} channels, this vocoder expects {n_mels} (shape (B, n_mels, T))"
        )
    if mel.shape[0] == 0 or mel.shape[2] == 0:
        raise VocoderError(f"mel is empty: shape {tuple(mel.shape)}")
    if not torch.isfinite(mel).all():
        raise VocoderError("mel contains NaN or inf values")
    return mel


class Snake(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / alpha`` with a learned per-channel ``alpha``."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]  # (1, C, 1)
        # the 1e-9 guards alpha -> 0; kept so outputs match the trained model bit for bit
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """HiFi-GAN "type 1" residual block: per dilation, act -> dilated conv -> act -> conv, plus skip.

    ``snake=True`` gives CosyVoice's HiFT block (Snake activations, whose ``alpha`` are parameters
    named ``activations1.i.alpha`` / ``activations2.i.alpha``); ``snake=False`` gives HiFi-GAN V1
    (leaky ReLU, no parameters), so both load their checkpoints under the upstream names.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilations: tuple[int, ...],
        snake: bool,
        lrelu_slope: float = 0.1,
    ):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=conv_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=conv_padding(kernel_size)) for _ in dilations
        )

        def act() -> nn.Module:
            return Snake(channels) if snake else nn.LeakyReLU(lrelu_slope)

        self.activations1 = nn.ModuleList(act() for _ in dilations)
        self.activations2 = nn.ModuleList(act() for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


def mrf(resblocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Multi-receptive-field fusion: the mean of every block's output, summed in upstream order."""
    total = resblocks[0](x)
    for block in resblocks[1:]:
        total = total + block(x)
    return total / len(resblocks)
