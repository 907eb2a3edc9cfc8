"""Images and videos -> flattened patches for the vision tower (spec §4.5).

Images follow the official MGM path: RGB; a long side over 2880 px is scaled to 2880 (nearest); a side under
28 px is raised to 28 (nearest, per side); an aspect ratio over 200:1 is squeezed to 180:1; then the
``Qwen2VLImageProcessor`` steps: ``smart_resize`` to multiples of 28 within [min_pixels, max_pixels], bicubic
resize, scale to [0, 1], CLIP mean/std, and patches flattened as (C, t, 14, 14) with the single frame
repeated over the temporal patch.

Videos follow ``qwen_vl_utils.fetch_video`` as MGM calls it (fps 2, at most 16 frames, frame count even):
the sampled frames are resized so that all of them together stay within ``total_pixels``, and consecutive
frame pairs form one temporal patch. Decoding is PyAV's; the resize is PIL's bicubic where upstream uses
torchvision's antialiased bicubic (the two can differ by one grey level). Beyond the official, the audio
track of a video can be decoded too (``video_audio_track``). Bad input raises :class:`VisionError`.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from mgm_omni.audio import AudioError, load_audio
from mgm_omni.config import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionError(ValueError):
    """An image or video that cannot be used: missing, unreadable, corrupt, empty or too large."""


@dataclass(frozen=True)
class VisionPreprocessConfig:
    """Image and video settings; defaults are the Qwen2.5-VL processor's and MGM's video call's.

    ``max_decode_pixels`` refuses images whose header promises more pixels than that (decompression-bomb
    guard, checked before decoding); ``max_side`` and below are the official MGM image rules.
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    max_side: int = 2880
    min_side: int = 28
    max_aspect: float = 200.0
    clamp_aspect: int = 180
    max_decode_pixels: int = 100_000_000
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 16
    video_min_pixels: int = 28 * 28 * 4
    video_frame_max_pixels: int = 28 * 28 * 768
    video_total_pixels: int = 28 * 28 * 2048 * 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"VisionPreprocessConfig.{f.name} must be a positive integer, "
                                  f"got {value!r}")
        if self.min_pixels > self.max_pixels or self.video_min_frames > self.video_max_frames:
            raise ConfigError("VisionPreprocessConfig needs min_pixels <= max_pixels and "
                              "video_min_frames <= video_max_frames")
        if not (self.video_fps > 0 and self.clamp_aspect < self.max_aspect):
            raise ConfigError("VisionPreprocessConfig needs video_fps > 0 and clamp_aspect < max_aspect")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


@dataclass
class VisionInput:
    """Tower input: ``pixel_values`` (N, C * t * p * p) float32, ``grid_thw`` (K, 3) int64, a row per item."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    kind: str  # "image" or "video"

    def num_tokens(self, merge_size: int = 2) -> list[int]:
        """LLM tokens per item: t * (h / m) * (w / m)."""
        return [t * (h // merge_size) * (w // merge_size) for t, h, w in self.grid_thw.tolist()]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Height and width, multiples of ``factor``, within [min_pixels, max_pixels], keeping the aspect."""
    if min(height, width) <= 0 or max(height, width) / min(height, width) > 200:
        raise VisionError(f"cannot resize a {width}x{height} picture: aspect ratio must be at most 200:1")
    h = round(height / factor) * factor  # Python's round (half to even), as upstream
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def load_image(source: str | os.PathLike | bytes | Image.Image, cfg: VisionPreprocessConfig) -> Image.Image:
    """Open an image (path, bytes or PIL image) as RGB, refusing oversized headers before decoding.

    Like upstream, EXIF orientation is not applied and an alpha channel is dropped, not composited.
    """
    if isinstance(source, Image.Image):
        image, name = source, "<PIL image>"
    else:
        name = str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__} image>"
        if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
            raise VisionError(f"{name}: image file not found")
        try:
            raw = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            image = Image.open(raw)  # lazy: reads the header only
        except Image.DecompressionBombError as exc:
            raise VisionError(f"{name}: refused as a decompression bomb ({exc})") from exc
        except Exception as exc:
            raise VisionError(f"{name}: unreadable or unsupported image "
                              f"({type(exc).__name__}: {exc})") from exc
    w, h = image.size
    if w * h > cfg.max_decode_pixels:
        raise VisionError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} Mpx, over max_decode_pixels="
                          f"{cfg.max_decode_pixels / 1e6:.0f} Mpx (decompression-bomb guard); "
                          "downscale it first")
    if w == 0 or h == 0:
        raise VisionError(f"{name}: empty image ({w}x{h})")
    try:
        image.load()  # decode now, so truncated or corrupt data fails here
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:
        raise VisionError(f"{name}: corrupt image data ({type(exc).__name__}: {exc})") from exc


def fit_image(image: Image.Image, cfg: VisionPreprocessConfig) -> Image.Image:
    """The official MGM size rules (``preprocess_image_qwen2vl``), all nearest-neighbour, in this order."""
    if max(image.size) > cfg.max_side:
        scale = cfg.max_side / max(image.size)
        # max(1, ...): upstream truncates a very thin side to 0 px and crashes
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.NEAREST)
    if min(image.size) < cfg.min_side:
        image = image.resize((max(image.width, cfg.min_side), max(image.height, cfg.min_side)), Image.NEAREST)
    if image.width / image.height > cfg.max_aspect:
        image = image.resize((image.height * cfg.clamp_aspect, image.height), Image.NEAREST)
    if image.height / image.width > cfg.max_aspect:
        image = image.resize((image.width, image.width * cfg.clamp_aspect), Image.NEAREST)
    return image


def _normalize(frames: np.ndarray, cfg: VisionPreprocessConfig) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32, scaled to [0, 1] then CLIP-normalised."""
    x = frames.astype(np.float64) / 255.0
    x = (x - np.asarray(cfg.image_mean)) / np.asarray(cfg.image_std)
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def patchify(frames: np.ndarray, cfg: VisionPreprocessConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(T, C, H, W) normalised frames -> ((t*h*w, C*tp*p*p) patches, (t, h, w) grid in patches).

    The last frame is repeated up to a multiple of the temporal patch. Rows run over (t, block row, block
    column, row in block, column in block), so each m x m merge block is contiguous; columns run over
    (C, tp, p, p).
    """
    tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    if len(frames) % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp - len(frames) % tp, axis=0)])
    n, c, height, width = frames.shape
    t, h, w = n // tp, height // p, width // p
    x = frames.reshape(t, tp, c, h // m, m, p, w // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, bh, bw, mh, mw, C, tp, p, p)
    return np.ascontiguousarray(x).reshape(t * h * w, c * tp * p * p), (t, h, w)


def preprocess_image(
    images: str | os.PathLike | bytes | Image.Image | list, cfg: VisionPreprocessConfig | None = None
) -> VisionInput:
    """One image or a list of images -> packed tower input (one ``grid_thw`` row per image)."""
    cfg = cfg or VisionPreprocessConfig()
    items = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise VisionError("no images given")
    patches, grids = [], []
    for item in items:
        image = fit_image(load_image(item, cfg), cfg)
        h, w = smart_resize(image.height, image.width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
        if (w, h) != image.size:
            image = image.resize((w, h), Image.BICUBIC)
        flat, grid = patchify(_normalize(np.asarray(image)[None], cfg), cfg)
        patches.append(flat)
        grids.append(grid)
    pixel_values = torch.from_numpy(np.concatenate(patches))
    return VisionInput(pixel_values, torch.tensor(grids, dtype=torch.long), "image")


def sample_frame_count(total_frames: int, video_fps: float, cfg: VisionPreprocessConfig) -> int:
    """Frames to keep (``qwen_vl_utils.smart_nframes``): ``fps`` per second, clamped, even, <= the total."""
    f = cfg.temporal_patch_size
    lo = math.ceil(cfg.video_min_frames / f) * f
    hi = cfg.video_max_frames // f * f
    n = min(max(total_frames / video_fps * cfg.video_fps, lo), hi, total_frames)
    return max(f, int(n // f) * f)  # fewer than f frames: the last one is repeated (upstream raises)


def preprocess_video(
    source: str | os.PathLike | bytes, cfg: VisionPreprocessConfig | None = None
) -> VisionInput:
    """Decode a video, sample its frames and turn them into one packed tower input (``grid_thw`` (1, 3))."""
    cfg = cfg or VisionPreprocessConfig()
    frames = decode_video_frames(source, cfg)  # (T, H, W, 3) uint8, already resized
    flat, grid = patchify(_normalize(frames, cfg), cfg)
    return VisionInput(torch.from_numpy(flat), torch.tensor([grid], dtype=torch.long), "video")


def video_frame_size(height: int, width: int, n_frames: int, cfg: VisionPreprocessConfig) -> tuple[int, int]:
    """Frame size for ``n_frames`` sampled frames: each within its share of ``video_total_pixels``."""
    budget = max(min(cfg.video_frame_max_pixels, cfg.video_total_pixels / n_frames * cfg.temporal_patch_size),
                 int(cfg.video_min_pixels * 1.05))
    return smart_resize(height, width, cfg.factor, cfg.video_min_pixels, budget)


def decode_video_frames(source: str | os.PathLike | bytes, cfg: VisionPreprocessConfig) -> np.ndarray:
    """The sampled frames of a video's first video track, evenly spread, as resized RGB (T, H, W, 3) uint8.

    Frames are resized as they are decoded, so memory holds at most ``video_max_frames`` small frames.
    """
    name, data = _open_media(source, "video")
    try:
        with av.open(_rewind(data)) as container:
            if not container.streams.video:
                raise VisionError(f"{name}: the file has no video track")
            stream = container.streams.video[0]
            # an unknown rate counts as video_fps: every frame is a sample (up to the frame cap)
            rate = float(stream.average_rate or stream.guessed_rate or 0) or cfg.video_fps
            total = stream.frames or sum(1 for pkt in container.demux(stream) if pkt.size)
        frames, seen = _decode_selected(_rewind(data), _frame_indices(total, rate, cfg), cfg)
        if seen and seen != total:  # the header miscounted: sample again over the true count
            frames, _ = _decode_selected(_rewind(data), _frame_indices(seen, rate, cfg), cfg)
    except VisionError:
        raise
    except Exception as exc:  # FFmpeg errors on corrupt or truncated streams
        raise VisionError(f"{name}: unreadable or corrupt video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VisionError(f"{name}: no decodable video frames")
    return np.stack(frames)


def _frame_indices(total: int, rate: float, cfg: VisionPreprocessConfig) -> list[int]:
    n = sample_frame_count(total, rate, cfg)
    # evenly spaced over [0, total - 1], rounded half to even in float32 (torch.linspace(...).round())
    return torch.linspace(0, max(total - 1, 0), n).round().long().tolist()


def _decode_selected(data, keep: list[int], cfg: VisionPreprocessConfig) -> tuple[list[np.ndarray], int]:
    """Decode the whole track, keeping (and resizing) the frames at ``keep``; also count the frames seen."""
    wanted: dict[int, int] = {}
    for i in keep:
        wanted[i] = wanted.get(i, 0) + 1  # a very short video repeats indices
    frames, seen, size = [], 0, None
    with av.open(data) as container:
        for frame in container.decode(container.streams.video[0]):
            if seen in wanted:
                image = frame.to_image()  # RGB
                size = size or video_frame_size(image.height, image.width, len(keep), cfg)
                if (image.height, image.width) != size:
                    image = image.resize(size[::-1], Image.BICUBIC)
                frames.extend([np.asarray(image)] * wanted[seen])
            seen += 1
    return frames, seen


def _open_media(source, what: str):
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise VisionError(f"{path}: {what} file not found")
        if path.stat().st_size == 0:
            raise VisionError(f"{path}: empty file (0 bytes)")
        return str(path), str(path)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise VisionError(f"<bytes {what}>: empty input (0 bytes)")
        return f"<bytes {what}>", io.BytesIO(bytes(source))
    raise VisionError(f"cannot read a {what} from a {type(source).__name__}; pass a path or bytes")


def _rewind(data):
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


def video_audio_track(source: str | os.PathLike | bytes, sample_rate: int = 16000) -> torch.Tensor | None:
    """The audio track of a video as a mono (S,) float32 wave (channel 0, as MGM loads audio), or None.

    None means the container has no audio stream (a silent video): the caller simply has nothing to hear.
    A present but undecodable track raises :class:`VisionError`.
    """
    name, data = _open_media(source, "video")
    try:
        with av.open(_rewind(data)) as container:
            if not container.streams.audio:
                return None
    except Exception as exc:
        raise VisionError(f"{name}: unreadable or corrupt video ({type(exc).__name__}: {exc})") from exc
    try:
        wave, _ = load_audio(_rewind(data), sample_rate, channel=0)
    except AudioError as exc:
        raise VisionError(f"{name}: audio track: {exc}") from exc
    return wave
