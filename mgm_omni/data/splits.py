"""Train / dev / test by sentence (a stable hash, so no sentence is in two splits), and held-out speakers.

The sentence split depends only on the normalised sentence, never on the seed, the sources or the order, so
it stays the same across builds. Items of the held-out (dev) speakers form the split ``dev_speakers``; those
speakers never appear in training and speak only dev/test sentences, so neither their voice nor their text is
in ``train``.
"""

from __future__ import annotations

import hashlib

from .text_sources import dedupe_key

SPLITS = ("train", "dev", "test", "dev_speakers")


def sentence_split(text: str, lang: str, dev: float, test: float) -> str:
    """``"train"``, ``"dev"`` or ``"test"`` for a sentence, from a hash of its dedupe key.

    Args:
        dev, test: the fractions of sentences in dev and test.
    """
    digest = hashlib.sha1(f"{lang}\0{dedupe_key(text, lang)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "dev" if u < dev else "test" if u < dev + test else "train"


def check_dev_speakers(dev_ids: tuple[str, ...], speakers) -> None:
    """Raise ``ValueError`` unless every dev speaker exists and no training speaker is the same person.

    A training speaker made from a dev speaker by a transform (same identity, e.g. ``rms~vtl1.1`` for ``rms``)
    would leak that voice into training, so it is refused.
    """
    ids = {s.id for s in speakers}
    missing = [d for d in dev_ids if d not in ids]
    if missing:
        raise ValueError(f"dev speakers {missing} are not in the roster; speakers are: {', '.join(sorted(ids))}")
    dev_identities = {s.identity for s in speakers if s.id in dev_ids}
    leaks = sorted({s.id for s in speakers if s.id not in dev_ids and s.identity in dev_identities})
    if leaks:
        raise ValueError(f"training speakers {leaks} are the same person as a dev speaker; hold them out too "
                         "or drop them")
