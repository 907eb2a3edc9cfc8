"""Image and video preprocessing: parity with transformers' PIL ``Qwen2VLImageProcessor`` (test-only oracle),
the official MGM size rules, the patch layout against a loop reference, video frame sampling, the audio track
of a video, and bad input (tiny and huge images, corrupt files, missing tracks)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
from media_files import write_video
from PIL import Image

from mgm_omni.config import ConfigError
from mgm_omni.generation.mllm.vision_inputs import (
    VisionError,
    VisionPreprocessConfig,
    decode_video_frames,
    fit_image,
    patchify,
    preprocess_image,
    preprocess_video,
    sample_frame_count,
    smart_resize,
    video_audio_track,
    video_frame_size,
)

CFG = VisionPreprocessConfig()


@pytest.fixture(scope="module")
def oracle():
    mod = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    return mod.Qwen2VLImageProcessorPil(min_pixels=CFG.min_pixels, max_pixels=CFG.max_pixels)


def _random_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("h, w", [(100, 150), (1, 1), (37, 500), (3000, 100), (300, 7), (448, 448), (57, 83)])
def test_image_matches_transformers_processor(oracle, h, w):
    image = _random_image(h, w, seed=h * w)
    ours = preprocess_image(image)
    ref = oracle(images=fit_image(image, CFG), return_tensors="np")
    assert ours.grid_thw.tolist() == ref["image_grid_thw"].tolist()
    err = np.abs(ours.pixel_values.numpy() - ref["pixel_values"]).max()
    assert err < 1e-5, err
    t, gh, gw = ours.grid_thw[0].tolist()
    assert ours.num_tokens() == [t * gh // 2 * gw // 2]


def test_image_modes_and_lists(oracle, tmp_path):
    rgba = _random_image(60, 90, seed=5, mode="RGBA")
    path = tmp_path / "a.png"
    rgba.save(path)
    ours = preprocess_image([str(path), path.read_bytes(), _random_image(30, 200, seed=6)])
    assert ours.grid_thw.shape == (3, 3) and ours.kind == "image"
    assert ours.pixel_values.shape[0] == int(ours.grid_thw.prod(-1).sum())
    ref = oracle(images=rgba.convert("RGB"), return_tensors="np")["pixel_values"]
    n = ref.shape[0]
    assert np.abs(ours.pixel_values[:n].numpy() - ref).max() < 1e-5  # path input
    assert torch.equal(ours.pixel_values[:n], ours.pixel_values[n:2 * n])  # bytes input, same image


def test_official_size_rules():
    size = lambda w, h, cfg=CFG: fit_image(Image.new("RGB", (w, h)), cfg).size  # noqa: E731
    assert size(3000, 100) == (2880, 96)  # long side to 2880, nearest
    assert size(5760, 4000) == (2880, 2000)
    assert size(1, 1) == (28, 28)  # each short side raised to 28
    assert size(20, 500) == (28, 500)
    assert size(5000, 1) == (2880, 28)  # 1 * 0.576 truncates to 0 upstream (a crash); we keep 1 px, then 28
    assert size(640, 480) == (640, 480)
    # the 200:1 clamp to 180:1 only fires when the other rules leave such a ratio
    wide = VisionPreprocessConfig(max_side=10000)
    assert size(6000, 28, wide) == (28 * 180, 28)
    assert size(28, 6000, wide) == (28, 28 * 180)


def test_smart_resize():
    assert smart_resize(100, 150, 28, 3136, 12845056) == (112, 140)
    assert smart_resize(28, 28, 28, 3136, 12845056) == (56, 56)  # raised to min_pixels
    h, w = smart_resize(2880, 2880, 28, 3136, 28 * 28 * 256)  # lowered to max_pixels
    assert (h, w) == (448, 448) and h * w <= 28 * 28 * 256
    assert smart_resize(42, 42, 28, 56 * 56, 10**7) == (56, 56)  # round(1.5) = 2 (half to even)
    with pytest.raises(VisionError, match="200:1"):
        smart_resize(10, 2100, 28, 3136, 12845056)


def test_patch_layout_against_loop_reference():
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((3, 3, 56, 84)).astype(np.float32)  # 3 frames -> last one repeated
    flat, (t, h, w) = patchify(frames, CFG)
    assert (t, h, w) == (2, 4, 6) and flat.shape == (48, 3 * 2 * 14 * 14)
    padded = np.concatenate([frames, frames[-1:]])
    row = 0
    for g in range(t):
        for bi in range(h // 2):
            for bj in range(w // 2):
                for a in range(2):
                    for b in range(2):
                        r, c = (bi * 2 + a) * 14, (bj * 2 + b) * 14
                        patch = padded[2 * g:2 * g + 2, :, r:r + 14, c:c + 14]  # (tp, C, p, p)
                        assert np.array_equal(flat[row], patch.transpose(1, 0, 2, 3).reshape(-1))
                        row += 1


# ------------------------------------------------------------------------------------------ videos


def test_frame_count_rules():
    assert sample_frame_count(20, 10.0, CFG) == 4  # 2 s at 2 fps
    assert sample_frame_count(300, 30.0, CFG) == 16  # 10 s -> 20, capped at max_frames
    assert sample_frame_count(90, 30.0, CFG) == 6  # 3 s -> 6
    assert sample_frame_count(9, 30.0, CFG) == 4  # 0.3 s -> 0.6, raised to min_frames 4
    assert sample_frame_count(3, 30.0, CFG) == 2
    assert sample_frame_count(1, 30.0, CFG) == 2  # the single frame is repeated (upstream raises)
    assert sample_frame_count(300, 30.0, VisionPreprocessConfig(video_max_frames=8, video_fps=1.0)) == 8
    assert video_frame_size(1080, 1920, 16, CFG) == (560, 1008)  # per-frame cap 768 * 28 * 28
    h, w = video_frame_size(1080, 1920, 16, VisionPreprocessConfig(video_total_pixels=28 * 28 * 64))
    assert h * w <= 28 * 28 * 8 and (h, w) == (56, 84)


def test_video_sampling_and_layout(oracle, tmp_path):
    path = write_video(tmp_path / "v.mp4")
    frames = decode_video_frames(str(path), CFG)
    assert frames.shape == (4, 56, 56, 3)
    red = frames[..., 0].reshape(4, -1).mean(1)
    picked = [0, 6, 13, 19]  # linspace(0, 19, 4) rounded
    assert np.abs(red - np.array(picked) * 12).max() < 5, red
    video = preprocess_video(str(path))
    assert video.kind == "video" and video.grid_thw.tolist() == [[2, 4, 4]] and video.num_tokens() == [8]
    # consecutive frames fill the two temporal slots of a patch; each slot is the image processor's patch
    ours = video.pixel_values.view(2, 16, 3, 2, 14, 14)
    for g in range(2):
        for slot in range(2):
            ref = oracle(images=Image.fromarray(frames[2 * g + slot]), return_tensors="np")["pixel_values"]
            ref = torch.from_numpy(ref).view(16, 3, 2, 14, 14)[:, :, 0]
            assert (ours[g, :, :, slot] - ref).abs().max() < 1e-5
    # bytes input and a container without a frame count in its header (mkv) give the same frames
    assert np.array_equal(decode_video_frames(path.read_bytes(), CFG), frames)
    mkv = write_video(tmp_path / "v.mkv")
    assert np.abs(decode_video_frames(str(mkv), CFG).astype(int) - frames).max() <= 2


def test_single_frame_and_long_video(tmp_path):
    one = preprocess_video(str(write_video(tmp_path / "one.mp4", n_frames=1)))
    assert one.grid_thw.tolist() == [[1, 4, 4]]
    path = write_video(tmp_path / "long.mp4", n_frames=200, fps=20, size=(32, 32))
    long = decode_video_frames(str(path), CFG)
    assert long.shape[0] == 16  # 10 s at 2 fps = 20, capped at 16


def test_video_audio_track(tmp_path):
    with_audio = write_video(tmp_path / "a.mp4", audio=True)
    wave = video_audio_track(str(with_audio))
    assert wave.dim() == 1 and abs(wave.shape[0] - 32000) < 2048  # 2 s at 16 kHz (give or take AAC padding)
    assert 0.15 < float(wave.abs().max()) < 0.45
    assert video_audio_track(with_audio.read_bytes()).shape == wave.shape
    silent = write_video(tmp_path / "silent.mp4")
    assert video_audio_track(str(silent)) is None  # documented: no audio stream, nothing to hear


# ------------------------------------------------------------------------------------------ bad input


def _png_header(width, height):
    """A PNG whose header claims width x height; its pixel data is absent (never decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_huge_images_refused_from_the_header(tmp_path):
    with pytest.raises(VisionError, match="decompression"):
        preprocess_image(_png_header(20000, 20000))
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(12000, 9000))  # 108 Mpx: over our guard, under PIL's own
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(VisionError, match="max_decode_pixels"):
        preprocess_image(str(path))


def test_bad_images(tmp_path):
    with pytest.raises(VisionError, match="not found"):
        preprocess_image(str(tmp_path / "missing.png"))
    with pytest.raises(VisionError, match="unreadable"):
        preprocess_image(b"definitely not an image")
    good = tmp_path / "ok.png"
    _random_image(64, 64).save(good)
    with pytest.raises(VisionError, match="corrupt"):
        preprocess_image(good.read_bytes()[:200])  # truncated
    with pytest.raises(VisionError, match="no images"):
        preprocess_image([])


def test_bad_videos(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VisionError, match="unreadable or corrupt"):
        preprocess_video(str(junk))
    with pytest.raises(VisionError, match="corrupt"):
        video_audio_track(str(junk))
    good = write_video(tmp_path / "good.mp4").read_bytes()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(VisionError):
        preprocess_video(str(truncated))
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    with pytest.raises(VisionError, match="no video track"):
        preprocess_video(str(wav))
    with pytest.raises(VisionError, match="not found"):
        preprocess_video(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VisionError, match="empty"):
        preprocess_video(str(empty))


@pytest.mark.parametrize("bad", [{"min_pixels": 0}, {"video_max_frames": 2.5}, {"video_fps": 0.0},
                                 {"min_pixels": 10**9}, {"clamp_aspect": 300}])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        VisionPreprocessConfig(**bad)
