"""Languages: zh_CN first, English second. Message ids are the Chinese text itself.

So a string that nobody translated yet still reads correctly for our first users, and the English
catalog (``web/translations/en``) is checked complete by a test. Form titles, descriptions and
choices in ``forms/*.json`` are translated through the same catalog: :func:`extract_forms`
feeds them to ``pybabel extract`` and :func:`form_text` looks them up at render time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, redirect, request, session, url_for
from flask_babel import Babel, get_locale
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from engine.models import User
from web.extension import current_engine

LOCALES = {"zh_CN": "中文", "en": "English"}
DEFAULT = "zh_CN"
bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    chosen = session.get("lang")
    if chosen in LOCALES:
        return chosen
    if current_user and current_user.is_authenticated and current_user.locale in LOCALES:
        return current_user.locale
    return DEFAULT


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(
        form_text=form_text, locales=LOCALES, html_lang=html_lang, locale_code=locale_code
    )
    app.register_blueprint(bp)


def locale_code() -> str:
    """The request's language as one of LOCALES' keys (Babel reports zh_CN as zh_Hans_CN)."""
    locale = get_locale()
    return DEFAULT if locale is None or locale.language == "zh" else locale.language


def html_lang() -> str:
    return "zh-CN" if locale_code() == DEFAULT else locale_code()


def form_text(text: str | None) -> str:
    """A title, description or label from a form schema, in the reader's language."""
    return _(text) if text else ""


@bp.post("/lang")
def switch() -> Response:
    """Remember the choice in the session and, for a signed-in user, on their account."""
    code = request.form.get("lang", "")
    if code in LOCALES:
        session["lang"] = code
        if current_user.is_authenticated:
            with current_engine().db.write() as s:
                user = s.get(User, current_user.id)
                if user is not None:
                    user.locale = code
    back = request.referrer or ""
    parts = urlsplit(back)
    same_site = parts.netloc == request.host and parts.scheme in ("http", "https")
    return redirect(back if same_site else url_for("home.index"))


# --- catalog extraction for forms/*.json ---------------------------------------------------------

TRANSLATED_KEYS = ("title", "description", "x-help", "x-placeholder")


def extract_forms(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extractor: every title, description and choice label of a JSON Schema form."""
    schema = json.load(fileobj)
    for text in _form_strings(schema):
        yield 1, "gettext", text, []


def _form_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key in TRANSLATED_KEYS:
            if isinstance(node.get(key), str) and node[key]:
                yield node[key]
        # Choices are stored as their Chinese text and shown translated.
        yield from (choice for choice in node.get("enum", ()) if isinstance(choice, str) and choice)
        for key, value in node.items():
            if key not in (*TRANSLATED_KEYS, "enum", "default", "const", "examples"):
                yield from _form_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _form_strings(item)
