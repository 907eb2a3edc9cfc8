"""What a speech job tells its user: what it is about to do, how it ended, and what a ``tts_error`` means.

A ``tts_error`` is the SpeechLM's safeguard firing: a chunk of the text (up to ~50-100 tokens) did not end
on its own, so it was closed. Its audio is kept as generated (it may trail off in noise or silence), the
next chunk starts normally, and nothing is retried. :func:`explain` says so in words, with where it happened.
"""

from __future__ import annotations

CAUSES = {
    "step_cap": "it kept generating speech far past the length its text needs (the model lost its place in "
                "the text)",
    "blank_run": "it produced a long run of silent rows (the model stalled)",
}
FINISHES = {
    "max_rows": "decoding stopped at the row limit (--max-rows) before the end of the text",
    "cache_full": "decoding stopped when the model's context was full, before the end of the text",
}


def explain(aborts, finish_reason: str | None, unspoken: int, audio_seconds: float, where: str,
            at_seconds: list[float] | None = None, tiny: bool = False) -> list[str]:
    """Lines for the user about a job's safeguards and early stop (none when it simply finished).

    Args:
        aborts: the job's ``ChunkAbort`` records (``chunk``, ``row``, ``cause``) in order.
        finish_reason: ``end``, ``max_rows`` or ``cache_full``.
        unspoken: text tokens never placed (an early stop leaves some).
        audio_seconds, where: what was kept, and where it went (a file name, "the reply").
        at_seconds: how far into the audio each abort happened (speech tokens so far / 25 Hz), if known.
        tiny: the built-in random model, whose output is expected to trip the safeguards.
    """
    lines = []
    for i, a in enumerate(aborts):
        cause = getattr(a.cause, "value", a.cause)
        why = CAUSES.get(cause, f"a safeguard fired ({cause})")
        at = f" about {at_seconds[i]:.1f} s into the audio" if at_seconds and i < len(at_seconds) else ""
        lines.append(f"tts_error: chunk {a.chunk + 1} of the text was cut off{at} because {why} ('{cause}').")
    if aborts:
        lines.append(f"  Kept: all {audio_seconds:.2f} s of audio in {where}, including that chunk as generated "
                     "(it may end in noise or silence); decoding went on with the rest of the text.")
        lines.append("  The random model always trips this safeguard; use --model with a trained checkpoint."
                     if tiny else "  To retry, run again with another --seed or a lower --temperature.")
    if finish_reason in FINISHES:
        rest = f" ({unspoken} text tokens were not spoken)" if unspoken else ""
        lines.append(f"note: {FINISHES[finish_reason]}{rest}; the {audio_seconds:.2f} s spoken so far are in {where}.")
    return lines


def what_it_does(mouth, voice, text: str, out, load_seconds: float) -> str:
    """One line before decoding: the mouth (name, directory), the voice, how much text, where the audio goes."""
    if not voice.name:
        who = f"the voice of {voice.audio or 'the reference clip'}"
    else:
        who = "the bundled voice" if voice.name == "default" else f"voice '{voice.name}'"
    about = f" ({voice.description})" if voice.description else ""
    return (f"speaking {len(text)} characters with the mouth '{mouth.name}' ({mouth.path}) in {who}{about}, "
            f"streaming to {out}; loaded in {load_seconds:.2f} s")
