"""Templates: Jinja2 with autoescaping; each page gets the formatter ``t`` (labels, money,
dates in the request's language), the viewer, the CSRF token and ``url`` (links that keep
finance on the partner they picked)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates

from pipelines.web.i18n import Formatter

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def _url_for(viewer):
    def url(path: str, **params) -> str:
        q = {**(viewer.query() if viewer else {}), **params}
        q = {k: v for k, v in q.items() if v is not None and v != ""}
        return path + ("?" + urlencode(q) if q else "")

    return url


def render(request: Request, name: str, viewer=None, status_code: int = 200, **ctx):
    from pipelines.web.auth import csrf_token

    t = Formatter(getattr(request.state, "lang", "en"))
    return templates.TemplateResponse(
        request,
        name,
        {
            "t": t,
            "viewer": viewer,
            "csrf": csrf_token(request),
            "url": _url_for(viewer),
            "path": request.url.path,
            **ctx,
        },
        status_code=status_code,
    )


def render_error(request: Request, status: int, message: str, headers=None):
    """An error page that names nothing of what was asked (a 404 echoes no id)."""
    resp = render(
        request, "error.html", status_code=status, status=status, message=message, path="/"
    )
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp
