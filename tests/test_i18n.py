"""The English catalog is complete and compiled: no page shows a Chinese string to an English reader.

Message ids are the Chinese text (zh_CN is the first language), so a missing translation would not
break a page, only leave Chinese on an English one. ``make translations`` re-extracts and compiles.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "web" / "translations" / "en" / "LC_MESSAGES"
METHODS = [
    ("web/**.py", "python"),
    ("web/templates/**.html", "jinja2"),
    ("forms/**.json", "web.i18n:extract_forms"),
]


def extracted() -> set[str]:
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}
    found = extract_from_dir(str(ROOT), METHODS, keywords=keywords)
    return {message if isinstance(message, str) else message[0] for _, _, message, _, _ in found}


def _key(message_id: str | tuple[str, ...]) -> str:
    """A plural message is known by its singular form."""
    return message_id if isinstance(message_id, str) else message_id[0]


def _text(string: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return (string,) if isinstance(string, str) else tuple(string)


def test_every_message_in_the_code_has_an_english_translation() -> None:
    with (CATALOG / "messages.po").open("rb") as handle:
        catalog = read_po(handle)
    translated = {_key(m.id) for m in catalog if m.id and all(_text(m.string))}

    missing = sorted(extracted() - translated)

    assert not missing, f"{len(missing)} messages lack English (run `make translations`): {missing[:20]}"


def test_the_compiled_catalog_matches_the_source() -> None:
    with (CATALOG / "messages.po").open("rb") as handle:
        source = {_key(m.id): _text(m.string) for m in read_po(handle) if m.id}
    with (CATALOG / "messages.mo").open("rb") as handle:
        compiled = {_key(m.id): _text(m.string) for m in read_mo(handle) if m.id}
    assert compiled == {k: v for k, v in source.items() if all(v)}, "run `make translations` to recompile"
