"""Long-TTS-Eval scorer with the official command line.

    python -m mgm_omni.eval.long_tts_eval --data-path wcy1122/Long-TTS-Eval --output-dir OUT [--split S]

reads ``OUT/samples/<split>/<id>.wav`` exactly as the official ``mgm.eval.long_tts_eval.evaluation`` does and
writes the official ``OUT/wer_<split>.json`` (per-file dicts, then ``{size, wer}``), besides ``OUT/eval/``.
Any other ``mgm-omni eval`` flag may follow (``--judge``, ``--speaker-encoder``, ``--jobs``, ...). Unlike the
official script, a missing split folder is reported in the summary instead of raising KeyError at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mgm_omni.eval.runner import main as runner_main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--output-dir" not in argv and not any(a.startswith("--output-dir=") for a in argv):
        print(
            "usage: python -m mgm_omni.eval.long_tts_eval --data-path PATH --output-dir DIR [--split S] "
            "[mgm-omni eval flags]",
            file=sys.stderr,
        )
        return 2
    return runner_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
