"""Error pages in the user's language. Nothing a user can do should end in a bare 500 or a traceback.

Conflicts (a task someone else completed, a stale page) are 409 with a message that says what to
do next; an expired form (CSRF) is 400 and asks the user to reload rather than lose their input silently.
"""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from engine import EngineError
from engine.errors import Conflict, Forbidden, NotFound


def _page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_failed(err: CSRFError) -> tuple[str, int]:
        return _page(400, _("页面已过期"), _("表单已过期或来源无法确认。请返回、刷新页面后重新提交。"))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[str, int] | HTTPException:
        if request.path.startswith("/api/"):
            return err  # the API blueprint answers in JSON with its own handler
        titles = {
            400: _("请求有误"),
            403: _("无权访问"),
            404: _("页面不存在"),
            405: _("不支持的操作"),
            409: _("内容已变化"),
            413: _("文件过大"),
            429: _("操作过于频繁"),
        }
        messages = {
            403: _("您没有执行此操作的权限。如需访问，请联系本组织的管理员。"),
            404: _("您要找的内容不存在，或您无权查看。"),
            409: _("此内容已被他人处理或已更新，请刷新后查看最新状态。"),
        }
        code = err.code or 500
        return _page(code, titles.get(code, _("出错了")), messages.get(code, err.description or ""))

    @app.errorhandler(Forbidden)
    def forbidden(err: Forbidden) -> tuple[str, int]:
        return _page(403, _("无权访问"), _("您没有执行此操作的权限。"))

    @app.errorhandler(NotFound)
    def not_found(err: NotFound) -> tuple[str, int]:
        return _page(404, _("页面不存在"), _("您要找的内容不存在，或您无权查看。"))

    @app.errorhandler(Conflict)
    def conflict(err: Conflict) -> tuple[str, int]:
        return _page(409, _("内容已变化"), _("此内容已被他人处理或已更新，请刷新后查看最新状态。"))

    @app.errorhandler(EngineError)
    def engine_error(err: EngineError) -> tuple[str, int]:
        return _page(422, _("无法完成操作"), err.message)

    @app.errorhandler(500)
    def server_error(err: Exception) -> tuple[str, int]:
        message = _("系统遇到了问题，操作未被保存。请稍后重试；如仍有问题请联系管理员。")
        return _page(500, _("系统错误"), message)
