"""The package's words for people: ``i18n/<language>/msg.txt``, one ``中文: translation`` a line.

Chinese is the key, as in the ecosystem; the dashboard shows the English beside it
(web/labels.py) and the bricks pages' texts built on the server use ``bilingual``.
"""
from functools import cache

from .exceptions import ConfigurationError
from .shipped import shipped


@cache
def read_messages(language: str) -> dict[str, str]:
    """i18n/<language>/msg.txt as {中文: translation} (the first ``": "`` of a line separates)."""
    path = shipped(f"i18n/{language}/msg.txt", f"i18n/{language}/msg.txt")
    messages = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the labels {path}: {exc}") from None
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep and key.strip():
            messages[key.strip()] = value.strip()
    return messages


def bilingual(chinese: str) -> str:
    """``中文 (English)`` for a word of i18n/en/msg.txt; the Chinese alone if it has no English yet."""
    english = read_messages("en").get(chinese)
    return f"{chinese} ({english})" if english and english != chinese else chinese
