"""Templates: Jinja2 with autoescaping; each page gets the formatter ``t`` (labels, money,
dates in the request's language), the viewer, the CSRF token and ``url`` (links that keep
finance on the partner they picked)."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from pipelines.web.i18n import Formatter
from pipelines.web.views import link

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


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
            "url": functools.partial(link, viewer),
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
