"""The Gradio web demo: chat (text or microphone in; text and streamed speech out), TTS, reference voices.

Layout and event wiring only; every action is a :class:`~mgm_omni.serving.demo_service.DemoService` call.
Binds to 127.0.0.1 and never opens a public link unless asked for (``mgm-omni demo --share``).
"""

from __future__ import annotations

import os

from mgm_omni.serving.demo_service import NO_MLLM, DemoService
from mgm_omni.serving.services import Services

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo


def build_demo(services: Services):
    """The ``gr.Blocks`` app (not launched)."""
    import gradio as gr

    svc = DemoService(services)
    names = svc.voice_names()
    title = "MGM-Omni demo" + (" (tiny RANDOM model: audio is noise, not speech)" if services.tiny else "")

    with gr.Blocks(title="MGM-Omni") as demo:
        gr.Markdown(f"## {title}")
        with gr.Tab("Chat", id="chat"):
            if not svc.chat_available:
                gr.Markdown(f"**{NO_MLLM}**", elem_id="chat-unavailable")
            chatbot = gr.Chatbot(label="Conversation", height=320, elem_id="chatbot")
            state = gr.State([])
            with gr.Row():
                chat_text = gr.Textbox(label="Message", placeholder="Type a message", scale=4, elem_id="chat-text")
                mic = gr.Audio(sources=["microphone"], type="filepath", label="Or speak", scale=2)
            with gr.Accordion("Attach image, video or audio", open=False):
                with gr.Row():
                    image = gr.Image(type="filepath", label="Image")
                    video = gr.Video(label="Video")
                    audio_in = gr.Audio(sources=["upload"], type="filepath", label="Audio")
            with gr.Row():
                chat_voice = gr.Dropdown(names, value="default", label="Voice", elem_id="chat-voice")
                speak_replies = gr.Checkbox(True, label="Speak the replies")
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
            chat_audio = gr.Audio(label="Spoken reply", streaming=True, autoplay=True, elem_id="chat-audio")

        with gr.Tab("Text to speech", id="tts"):
            tts_text = gr.Textbox(label="Text", lines=4, elem_id="tts-text",
                                  placeholder="Type the text to speak")
            tts_voice = gr.Dropdown(names, value="default", label="Voice", elem_id="tts-voice")
            speak_btn = gr.Button("Speak", variant="primary", elem_id="tts-speak")
            tts_audio = gr.Audio(label="Speech", streaming=True, autoplay=True, elem_id="tts-audio")
            tts_status = gr.Markdown(elem_id="tts-status")

        with gr.Tab("Voices", id="voices"):
            gr.Markdown("Presets and uploaded voices. Add one from a 3-30 s clip (upload or record) and its "
                        "transcript; it is stored on the server and survives restarts.")
            gallery = gr.Dataframe(svc.voice_table(), headers=["name", "kind", "transcript / description"],
                                   interactive=False, elem_id="voice-table")
            ref_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Reference clip",
                                 elem_id="ref-audio")
            with gr.Row():
                ref_name = gr.Textbox(label="Voice name", placeholder="letters, digits, _ or -", elem_id="ref-name")
                ref_text = gr.Textbox(label="Transcript of the clip", elem_id="ref-text")
            add_btn = gr.Button("Add voice", elem_id="add-voice")
            add_status = gr.Markdown(elem_id="add-status")

        def on_speak(text, voice):
            try:
                for chunk in svc.speak(text, voice):
                    yield chunk, "Speaking..."
            except ValueError as exc:
                yield None, f"Error: {exc}"
                return
            yield gr.skip(), "Done."

        speak_btn.click(on_speak, [tts_text, tts_voice], [tts_audio, tts_status])

        def on_add(name, path, text):
            status = svc.add_voice(name, path, text)
            choices = svc.voice_names()
            return (status, svc.voice_table(), gr.update(choices=choices), gr.update(choices=choices))

        add_btn.click(on_add, [ref_name, ref_audio, ref_text], [add_status, gallery, tts_voice, chat_voice])

        def on_send(history_msgs, shown, text, mic_path, image_path, video_path, audio_path, voice, speak):
            try:
                message = svc.user_message(text, mic_path, image_path, video_path, audio_path)
            except ValueError as exc:
                yield history_msgs, shown + [{"role": "assistant", "content": f"Error: {exc}"}], None, ""
                return
            shown = shown + [{"role": "user", "content": text or "(media)"}]
            reply = ""
            for reply, chunk in svc.chat(history_msgs, message, voice, speak):
                yield history_msgs, shown + [{"role": "assistant", "content": reply}], chunk, ""
            if svc.chat_available:
                from mgm_omni.engine.understanding import ChatMessage, ChatPart

                history_msgs = history_msgs + [message, ChatMessage("assistant", [ChatPart("text", text=reply)])]
            yield history_msgs, shown + [{"role": "assistant", "content": reply}], gr.skip(), ""

        send.click(on_send, [state, chatbot, chat_text, mic, image, video, audio_in, chat_voice, speak_replies],
                   [state, chatbot, chat_audio, chat_text])
    return demo


def launch(services: Services, host: str = "127.0.0.1", port: int = 8888, share: bool = False,
           block: bool = True, out=None):
    """Serve the demo on ``host:port`` (a public link only with ``share``) and say where; returns the Blocks.

    Gradio's own start-up lines are silenced: they tell a user to edit code (``share=True``), where the
    command line has ``--share``.
    """
    import sys

    out = out or sys.stderr
    demo = build_demo(services)
    demo.queue(default_concurrency_limit=services.config.max_batch)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, show_error=True,
                quiet=True)
    print(f"MGM-Omni demo running on {demo.local_url}", file=out)
    if share and demo.share_url:
        print(f"Public link (anyone with it can use this demo): {demo.share_url}", file=out)
    elif share:
        print("Could not create a public link (no connection to the share server?); the demo is local only.",
              file=out)
    else:
        print("Local only; to create a public link, restart with: mgm-omni demo --share", file=out)
    if block:
        print("Press Ctrl-C to stop.", file=out, flush=True)
        demo.block_thread()
    return demo
