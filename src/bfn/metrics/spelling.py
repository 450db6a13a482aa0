"""Spelling accuracy (SA) of generated text, as defined in the BFN-Solver paper.

Each text is split into words on spaces (the space is index 0 of the 27-symbol text8 alphabet); ``_`` and other
whitespace also separate words, so text8-style strings that show the space as ``_`` work too. Empty strings are
dropped; every remaining token counts as a word, including the fragments cut off at the start and end of a sample.
A word is correct iff hunspell ``en_US`` (the dictionary bundled with the ``spylls`` package) accepts it, with the
word passed exactly as written. SA is (correct words) / (all words) over all texts, in [0, 1]; papers quote it in %.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

WORD_SEPARATORS = re.compile(r"[\s_]+")


def split_words(text: str) -> list[str]:
    """Words of ``text``: split on spaces, ``_`` and other whitespace, empty strings dropped."""
    return [word for word in WORD_SEPARATORS.split(text) if word]


@lru_cache(maxsize=1)
def en_us_dictionary() -> Any:
    """The hunspell ``en_US`` dictionary shipped inside ``spylls`` (loaded once, about a second)."""
    import spylls.hunspell
    from spylls.hunspell import Dictionary

    # An explicit path, so a stray en_US.aff in the working directory is never picked up instead.
    bundled = Path(spylls.hunspell.__file__).resolve().parent / "data" / "en" / "en_US"
    return Dictionary.from_files(str(bundled))


@lru_cache(maxsize=1 << 18)
def is_correct_word(word: str) -> bool:
    """Whether hunspell ``en_US`` accepts ``word`` (memoised: generated text repeats words a lot)."""
    return bool(en_us_dictionary().lookup(word))


def spelling_counts(texts: Sequence[str] | str) -> tuple[int, int]:
    """``(correct words, all words)`` over ``texts`` (a single string counts as one text)."""
    if isinstance(texts, str):
        texts = [texts]
    correct = total = 0
    for text in texts:
        for word in split_words(text):
            total += 1
            correct += is_correct_word(word)
    return correct, total


def spelling_accuracy(texts: Sequence[str] | str) -> float:
    """Spelling accuracy in [0, 1]: share of space-separated words in ``texts`` that hunspell en_US accepts.

    See the module docstring for the exact word rule. Raises ``ValueError`` when the texts contain no words at all
    (an empty list, or only separators), since the share is then undefined.
    """
    correct, total = spelling_counts(texts)
    if total == 0:
        raise ValueError("spelling_accuracy needs at least one word; the texts are empty or only separators")
    return correct / total
