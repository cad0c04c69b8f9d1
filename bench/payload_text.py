"""Draft-like text for the payload benchmarks: words drawn from a fixed vocabulary, so it
compresses about as natural text does (zlib: ~3x), never a run of one character."""
import random

_rng = random.Random(13)
_WORDS = ["".join(_rng.choice("abcdefghijklmnopqrstuvwxyzéü") for _ in range(_rng.randint(2, 10)))
          for _ in range(3000)]
# word frequencies fall off as in natural language (Zipf): the common words come back often
CORPUS = " ".join(_rng.choices(_WORDS, weights=[1 / (rank + 1) for rank in range(len(_WORDS))], k=400_000))


def draft(size: int, seed: int) -> str:
    """``size`` characters of the corpus from a place that depends on ``seed``."""
    if size <= 0:
        return ""
    start = (seed * 7919) % (len(CORPUS) - size)
    return CORPUS[start:start + size]
