"""Response headers every page gets, set in one place so no blueprint can forget them.

The Content-Security-Policy allows only our own origin: no inline scripts or styles, which is
why the stylesheet is a static file. Views that need more (a later diagram viewer, say) set their
own header; ``setdefault`` leaves it alone.
"""

from __future__ import annotations

from flask import Flask, Response

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'",
}


def add_security_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
