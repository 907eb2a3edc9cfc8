"""The spoken-question matching rule: normalisation, answer keys, and when a spoken reply agrees with a typed one."""

from __future__ import annotations

from recipes.brain_questions_eval import QUESTIONS, agreement, content_f1, keys_in, normalise


def test_normalise_spells_numbers_as_digits():
    assert normalise("Twenty-four hours!") == "24 hours"
    assert normalise("There are seven days, not 8.") == "there are 7 days not 8"
    assert normalise("One hundred degrees") == "100 degrees" and normalise("a hundred") == "a 100"


def test_keys_are_whole_words():
    assert keys_in("The capital is Paris.", ("paris",)) == {"paris"}
    assert keys_in("Parisian food", ("paris",)) == set()
    assert keys_in("Plants take in CO2, carbon dioxide.", ("carbon dioxide", "co2")) == {"carbon dioxide", "co2"}
    assert keys_in("A week has seven days.", ("7",)) == {"7"}


def test_agreement_rule():
    q, keys = "What is the capital of France?", ("paris",)
    assert agreement("The capital of France is Paris.", "Paris.", q, keys) == (True, "key")
    assert agreement("The capital of France is Paris.", "It is Lyon.", q, keys) == (False, "key")
    # The typed answer is off (no key): the spoken one agrees only by saying the same wrong thing.
    assert agreement("It is Lyon, a big city.", "Lyon is a big city.", q, keys) == (True, "content-f1")
    assert agreement("It is Lyon, a big city.", "Paris.", q, keys) == (False, "content-f1")
    assert agreement("It is Lyon.", "I cannot hear the audio.", q, keys) == (False, "content-f1")
    assert content_f1("Lyon", "Lyon", q) == 1.0 and content_f1("France", "France", q) == 0.0


def test_questions_are_many_distinct_and_keyed():
    assert len(QUESTIONS) >= 20 and len({q for q, _ in QUESTIONS}) == len(QUESTIONS)
    assert all(keys and all(normalise(k) == k for k in keys) for _, keys in QUESTIONS)
