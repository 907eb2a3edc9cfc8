"""Configuration of the CosyVoice2 flow-matching decoder (``CausalMaskedDiffWithXvec``).

Defaults are the full-size CosyVoice2-0.5B values. :meth:`FlowConfig.from_dict` reads the resolved
constructor kwargs that the official HyperPyYAML file produces (``flow_config.json`` of the golden
set, or the ``flow`` entry of ``cosyvoice2_full_config.json``), so a tiny test model and the real
one differ only in config values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class FlowConfigError(ValueError):
    """A flow configuration is inconsistent or asks for something this implementation lacks."""


@dataclass
class FlowEncoderConfig:
    """``UpsampleConformerEncoder``: conformer blocks at the token rate, ×ratio upsampling, more blocks."""

    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4  # hard-coded in the official code
    static_chunk_size: int = 25  # tokens per attention chunk in streaming calls; 0 = full attention
    activation: str = "swish"  # official default, not overridden by the yaml
    norm_eps: float = 1e-12  # LayerNorms inside the conformer blocks (embed / after_norm use 1e-5)

    def __post_init__(self) -> None:
        _positive(self, "output_size", "attention_heads", "linear_units", "num_blocks", "num_up_blocks")
        if self.output_size % self.attention_heads:
            raise FlowConfigError(
                f"encoder output_size {self.output_size} is not divisible by {self.attention_heads} heads"
            )
        if self.static_chunk_size < 0:
            raise FlowConfigError(f"encoder static_chunk_size must be >= 0, got {self.static_chunk_size}")
        if self.activation != "swish":
            raise FlowConfigError(f"encoder activation {self.activation!r} not supported (only 'swish')")


@dataclass
class FlowEstimatorConfig:
    """``CausalConditionalDecoder``: the 1-D U-Net with transformer blocks that predicts the velocity."""

    in_channels: int = 320  # x, mu, spk, cond stacked
    out_channels: int = 80
    channels: tuple[int, ...] = (256,)
    attention_head_dim: int = 64
    num_heads: int = 8
    n_blocks: int = 4
    num_mid_blocks: int = 12
    act_fn: str = "gelu"
    static_chunk_size: int = 50  # frames per attention chunk in streaming calls

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        _positive(self, "in_channels", "out_channels", "attention_head_dim", "num_heads", "n_blocks")
        if len(self.channels) != 1 or self.channels[0] <= 0:
            # CosyVoice2 uses a single level; deeper U-Nets (down/up-sampling) are not implemented
            raise FlowConfigError(f"estimator channels must be one positive width, got {list(self.channels)}")
        if self.num_mid_blocks < 0:
            raise FlowConfigError(f"estimator num_mid_blocks must be >= 0, got {self.num_mid_blocks}")
        if self.act_fn != "gelu":
            raise FlowConfigError(f"estimator act_fn {self.act_fn!r} not supported (only 'gelu')")
        if self.in_channels % 2:
            raise FlowConfigError(
                f"estimator in_channels must be even (sinusoidal time embedding), got {self.in_channels}"
            )


@dataclass
class FlowConfig:
    """The whole flow: token embedding, encoder, speaker projection and the conditional flow matcher."""

    vocab_size: int = 6561
    input_size: int = 512  # token embedding width = encoder input width
    output_size: int = 80  # mel bins
    spk_embed_dim: int = 192  # x-vector width (CAM++)
    token_mel_ratio: int = 2  # mel frames per token in the standard path
    pre_lookahead_len: int = 3
    n_timesteps: int = 10
    inference_cfg_rate: float = 0.7
    t_scheduler: str = "cosine"
    noise_frames: int = 30000  # MGM enlarged the fixed noise from 15000 frames
    noise_seed: int = 0
    encoder: FlowEncoderConfig = field(default_factory=FlowEncoderConfig)
    estimator: FlowEstimatorConfig = field(default_factory=FlowEstimatorConfig)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = FlowEncoderConfig(**self.encoder)
        if isinstance(self.estimator, Mapping):
            self.estimator = FlowEstimatorConfig(**self.estimator)
        _positive(self, "vocab_size", "input_size", "output_size", "spk_embed_dim", "token_mel_ratio")
        _positive(self, "n_timesteps", "noise_frames")
        if self.pre_lookahead_len < 1:
            raise FlowConfigError(f"pre_lookahead_len must be >= 1, got {self.pre_lookahead_len}")
        if self.input_size != self.encoder.output_size:
            # the pre-lookahead residual and the upsampler are built at the encoder width
            raise FlowConfigError(
                f"input_size {self.input_size} must equal encoder output_size {self.encoder.output_size}"
            )
        if self.estimator.in_channels != 4 * self.output_size:
            raise FlowConfigError(
                f"estimator in_channels {self.estimator.in_channels} must be 4 x output_size "
                f"({4 * self.output_size})"
            )
        if self.estimator.out_channels != self.output_size:
            raise FlowConfigError(
                f"estimator out_channels {self.estimator.out_channels} must equal output_size "
                f"{self.output_size}"
            )
        frames = self.encoder.static_chunk_size * self.token_mel_ratio
        if self.estimator.static_chunk_size != frames:
            # chunk boundaries are derived from token chunks, so both levels must agree
            raise FlowConfigError(
                f"estimator static_chunk_size {self.estimator.static_chunk_size} must be encoder chunk x "
                f"token_mel_ratio ({frames})"
            )
        if self.inference_cfg_rate < 0:
            raise FlowConfigError(f"inference_cfg_rate must be >= 0, got {self.inference_cfg_rate}")
        if self.t_scheduler not in ("cosine", "linear"):
            raise FlowConfigError(f"t_scheduler {self.t_scheduler!r} not supported ('cosine' or 'linear')")

    @classmethod
    def from_dict(cls, resolved: Mapping[str, Any]) -> FlowConfig:
        """Build from the resolved official constructor kwargs.

        Accepts ``{"kwargs": ..., "encoder": {"kwargs": ...}, "decoder": {...}}`` as written for
        ``CausalMaskedDiffWithXvec`` (optionally wrapped in ``{"flow": ...}``), or a plain dict of
        this dataclass's own fields (as :meth:`to_dict` writes).
        """
        if "flow" in resolved and isinstance(resolved["flow"], Mapping):
            resolved = resolved["flow"]
        if "kwargs" not in resolved:
            return cls(**resolved)
        top, enc = resolved["kwargs"], resolved["encoder"]["kwargs"]
        dec = resolved["decoder"]
        cfm, est = dec["kwargs"].get("cfm_params", {}), dec["estimator"]["kwargs"]
        _expect(top, output_type="mel")
        _expect(
            enc,
            input_layer="linear",
            pos_enc_layer_type="rel_pos_espnet",
            normalize_before=True,
            selfattention_layer_type="rel_selfattn",
            use_cnn_module=False,
            macaron_style=False,
        )
        _expect(cfm, solver="euler")
        if enc.get("input_size", top["input_size"]) != top["input_size"]:
            raise FlowConfigError("encoder input_size must equal the flow input_size")
        if dec["kwargs"].get("spk_emb_dim", top["output_size"]) != top["output_size"]:
            raise FlowConfigError("decoder spk_emb_dim must equal the flow output_size")
        encoder = FlowEncoderConfig(
            output_size=enc["output_size"],
            attention_heads=enc["attention_heads"],
            linear_units=enc["linear_units"],
            num_blocks=enc["num_blocks"],
            static_chunk_size=enc.get("static_chunk_size", 0),
            activation=enc.get("activation_type", "swish"),
        )
        estimator = FlowEstimatorConfig(
            in_channels=est["in_channels"],
            out_channels=est["out_channels"],
            channels=tuple(est["channels"]),
            attention_head_dim=est["attention_head_dim"],
            num_heads=est["num_heads"],
            n_blocks=est["n_blocks"],
            num_mid_blocks=est["num_mid_blocks"],
            act_fn=est["act_fn"],
            static_chunk_size=est["static_chunk_size"],
        )
        return cls(
            vocab_size=top["vocab_size"],
            input_size=top["input_size"],
            output_size=top["output_size"],
            spk_embed_dim=top["spk_embed_dim"],
            token_mel_ratio=top["token_mel_ratio"],
            pre_lookahead_len=top["pre_lookahead_len"],
            inference_cfg_rate=cfm.get("inference_cfg_rate", 0.7),
            t_scheduler=cfm.get("t_scheduler", "cosine"),
            encoder=encoder,
            estimator=estimator,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; ``FlowConfig.from_dict(cfg.to_dict()) == cfg``."""
        return dataclasses.asdict(self)


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or value <= 0:
            raise FlowConfigError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


def _expect(kwargs: Mapping[str, Any], **wanted: Any) -> None:
    for key, value in wanted.items():
        if key in kwargs and kwargs[key] != value:
            raise FlowConfigError(f"{key}={kwargs[key]!r} is not supported (only {value!r})")
