"""The Gradio demo driven in headless Chromium (Debian's, through Playwright): TTS, voice upload, chat.

Screenshots go to ``outputs/test-artifacts/web-demo/`` (gitignored). Needs ``apt-get install chromium
ffmpeg`` (Gradio re-encodes streamed audio with the ffmpeg binary) and ``pip install playwright gradio``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.server import free_port
from mgm_omni.engine.voices import PRESET_DIR

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "outputs" / "test-artifacts" / "web-demo"


@pytest.fixture(scope="module")
def demo_url(tiny_cache, tmp_path_factory):
    pytest.importorskip("gradio")
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists() or shutil.which("ffmpeg") is None:
        pytest.skip("needs Debian's chromium and ffmpeg (apt-get install chromium ffmpeg)")
    from mgm_omni.serving.services import Services
    from mgm_omni.serving.web_demo import launch

    services = Services.load(ServingConfig(voices_dir=tmp_path_factory.mktemp("voices"), max_rows=30),
                             model="tiny-random", temperature=0.0)
    port = free_port()
    demo = launch(services, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", services, demo
    demo.close()
    services.close()


@pytest.fixture(scope="module")
def page(demo_url, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")),
                                                   executable_path=CHROMIUM, args=ARGS, headless=True,
                                                   viewport={"width": 1200, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(demo_url[0], wait_until="load")
        yield pg
        ctx.close()


def test_demo_binds_to_localhost_without_share_link(demo_url):
    _, _, demo = demo_url
    assert demo.local_url.startswith("http://127.0.0.1:") and demo.share_url is None and not demo.share


def test_type_text_and_get_streamed_audio(page, demo_url):
    _, services, _ = demo_url
    before = len(services.engine.recent)
    page.get_by_role("tab", name="Text to speech").click()
    page.locator("#tts-text textarea").fill("Hello from the browser.")
    page.locator("#tts-speak").click()
    page.locator("#tts-status").get_by_text("Done.").wait_for()
    page.screenshot(path=str(ARTIFACTS / "01-tts.png"), full_page=True)
    assert page.locator("#tts-audio a[download]").count() == 1  # the streamed clip is in the player
    jobs = list(services.engine.recent)[before:]
    assert jobs and jobs[-1].stats.samples > 0 and jobs[-1].done


def test_upload_a_reference_voice(page, demo_url):
    _, services, _ = demo_url
    page.get_by_role("tab", name="Voices").click()
    page.locator("#ref-audio input[type=file]").set_input_files(str(PRESET_DIR / "rms.flac"))
    page.locator("#ref-name textarea, #ref-name input").first.fill("browser-voice")
    page.locator("#ref-text textarea, #ref-text input").first.fill("The birch canoe slid on the smooth planks.")
    time.sleep(0.5)  # let the upload settle in the component
    page.locator("#add-voice").click()
    page.locator("#add-status").get_by_text("Added voice 'browser-voice'").wait_for()
    page.locator("#voice-table").get_by_text("browser-voice").first.wait_for(state="attached")
    page.screenshot(path=str(ARTIFACTS / "02-voice-added.png"), full_page=True)
    assert "browser-voice" in services.voices.names()
    assert (services.voices.dir / "browser-voice" / "prompt.safetensors").is_file()


def test_chat_without_mllm_says_so(page):
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-text textarea").fill("Hi!")
    page.locator("#chat-send").click()
    page.locator("#chatbot").get_by_text("The MLLM is not loaded").wait_for()
    page.screenshot(path=str(ARTIFACTS / "03-chat.png"), full_page=True)
