"""The public pledge board (挂牌亮诺) and masses' feedback (/board), no sign-in needed."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("board", __name__, url_prefix="/board")
