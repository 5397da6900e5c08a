"""Every API error is ``{"error": {"code", "message", "details"}}`` with the right status, never HTML.

``code`` is stable for programs (the engine's error codes, or HTTP's names in snake case);
``message`` is for people; ``details`` carries what a client needs to fix the request: the form's
field errors, a bundle's problems, the parameters that were wrong. Engine errors raised inside an
API view are mapped here (the blueprint's handlers win over web/errors.py's HTML pages); anything
else that reaches an ``/api/`` path as a non-JSON error (an unknown route, a wrong method, a
failure outside the blueprint) is rewritten by :func:`json_errors_only`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException, default_exceptions
from werkzeug.wrappers import Response

from engine import BundleInvalid, EngineError, ValidationFailed
from engine.errors import Conflict, Forbidden, NotFound

PREFIX = "/api/"
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


class ApiError(Exception):
    """An error the API answers with directly (bad parameters, authentication, authorisation)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def bad_request(message: str, details: Any) -> ApiError:
    return ApiError(400, "bad_request", message, details)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def json_body(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with Chinese left readable (ensure_ascii=False), for people reading curl output too."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return Response(text, status=status, mimetype="application/json", headers=headers)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    return json_body({"error": {"code": code, "message": message, "details": details}}, status, headers)


def _http_code(status: int) -> str:
    known = default_exceptions.get(status)
    name = known.__name__ if known else "error"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _http_message(status: int) -> str:
    messages = {
        400: _("请求格式有误。"),
        401: _("需要有效的访问令牌。"),
        403: _("无权执行此操作。"),
        404: _("请求的资源不存在。"),
        405: _("此地址不支持该请求方法。"),
        413: _("请求内容过大。"),
        429: _("请求过于频繁，请稍后再试。"),
        500: _("系统遇到了问题，操作未被保存。"),
    }
    return messages.get(status, _("请求未能完成。"))


def register(bp: Blueprint) -> None:
    """Install the blueprint's handlers and the app-wide rule that /api/ never answers in HTML."""

    @bp.errorhandler(ApiError)
    def api_error(err: ApiError) -> Response:
        return error_response(err.status, err.code, err.message, err.details, err.headers)

    @bp.errorhandler(ValidationFailed)
    def validation_failed(err: ValidationFailed) -> Response:
        return error_response(422, err.code, _("表单数据未通过校验。"), err.fields)

    @bp.errorhandler(BundleInvalid)
    def bundle_invalid(err: BundleInvalid) -> Response:
        problems = [p.as_dict() for p in err.problems]
        return error_response(422, err.code, _("流程包未通过检查，未部署任何内容。"), problems)

    @bp.errorhandler(NotFound)
    def engine_not_found(err: NotFound) -> Response:
        return error_response(404, err.code, err.message)

    @bp.errorhandler(Forbidden)
    def engine_forbidden(err: Forbidden) -> Response:
        return error_response(403, err.code, err.message)

    @bp.errorhandler(Conflict)
    def engine_conflict(err: Conflict) -> Response:  # InvalidState too: already completed, stale revision
        return error_response(409, err.code, err.message)

    @bp.errorhandler(EngineError)
    def engine_error(err: EngineError) -> Response:
        return error_response(422, err.code, err.message, err.details)

    @bp.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        headers = {k: v for k, v in err.get_headers() if k in KEPT_HEADERS}
        return error_response(status, _http_code(status), _http_message(status), None, headers)

    @bp.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        propagate = current_app.config.get("PROPAGATE_EXCEPTIONS")
        if propagate or (propagate is None and (current_app.testing or current_app.debug)):
            raise err  # as Flask does: tests (and schemathesis) see the traceback, not a tidy 500
        current_app.logger.exception("API request failed: %s %s", request.method, request.path)
        return error_response(500, "internal_error", _http_message(500))

    @bp.after_app_request
    def json_errors_only(response: Response) -> Response:
        if not request.path.startswith(PREFIX) or response.status_code < 400 or response.is_json:
            return response
        status = response.status_code
        headers = {k: v for k, v in response.headers.items() if k in KEPT_HEADERS}
        return error_response(status, _http_code(status), _http_message(status), None, headers)
