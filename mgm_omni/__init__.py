"""mgm-omni: an omni speech LLM in plain PyTorch.

The brain (an MLLM) understands text, images, video and long audio; the mouth (a SpeechLM with a
TTS-Adapter and chunk-based parallel decoding) speaks long-form, streamed, voice-cloned speech.
"""

__version__ = "0.1.0"
