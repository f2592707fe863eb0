"""The Partner Bills page: a FastAPI app over one data dir (``create_app(root)``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from pipelines.config import resolve_data_dir
from pipelines.web import api, pages
from pipelines.web.auth import SESSION_MAX_AGE_S, LoginThrottle, NotSignedIn, secret_key
from pipelines.web.i18n import LOCALES, negotiate
from pipelines.web.render import render_error

HERE = Path(__file__).resolve().parent
CJK_FONT = HERE.parent / "assets" / "NotoSansCJKsc-Regular-subset.ttf"
API_DESCRIPTION = """\
Partner bills of KooGallery, as on the Partner Bills page, with Huawei Cloud's field names
where they exist. Money is a decimal string with 2 places.

**Authentication**: the page's accounts. Send HTTP Basic credentials
(`Authorization: Basic base64(user:password)`), a token issued by
`koobill users token --username U` (`Authorization: Bearer <token>`), or the page's session
cookie. A partner user sees their partner only; a finance user chooses one with
`?partner_id=`. Another partner's resources answer 404.
"""


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    ),
]


class LanguageAndHeaders:
    """Pure ASGI: picks the language (``?lang=``, then the cookie, then Accept-Language) into
    ``request.state.lang``, remembers a switch in a cookie, adds the security headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        asked = request.query_params.get("lang")
        chosen = asked if asked in LOCALES else request.cookies.get("koobill_lang")
        scope.setdefault("state", {})["lang"] = (
            chosen if chosen in LOCALES else negotiate(request.headers.get("accept-language"))
        )

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if asked in LOCALES:
                    headers.append(
                        (
                            b"set-cookie",
                            f"koobill_lang={asked}; Max-Age=31536000; Path=/; SameSite=lax".encode(),
                        )
                    )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def _openapi(app: FastAPI) -> dict:
    """The generated document, with the accounts' three ways in as security schemes."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        doc.setdefault("components", {})["securitySchemes"] = {
            "basic": {"type": "http", "scheme": "basic"},
            "token": {"type": "http", "scheme": "bearer", "description": "koobill users token"},
            "session": {"type": "apiKey", "in": "cookie", "name": "koobill_session"},
        }
        doc["security"] = [{"basic": []}, {"token": []}, {"session": []}]
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(data_dir: str | Path | None = None, *, https_only: bool = False) -> FastAPI:
    """The app over ``data_dir`` (read-only over the published data)."""
    from pipelines.errors import KoobillError

    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise KoobillError(f"data dir {root} does not exist")
    app = FastAPI(
        title="koobill Partner Bills API",
        version="2",
        description=API_DESCRIPTION,
        docs_url=None,  # the interactive docs load scripts from a CDN: not served
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.root = root
    app.state.throttle = LoginThrottle()
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key(root),
        session_cookie="koobill_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=https_only,
    )

    app.add_middleware(LanguageAndHeaders)
    _add_routes(app)
    _add_error_handlers(app)
    return app


def _add_routes(app: FastAPI) -> None:
    """The bundled font and static files, the pages, the JSON API and its OpenAPI schema."""

    @app.get("/static/fonts/noto-sans-cjk-sc.ttf", include_in_schema=False)
    def cjk_font() -> FileResponse:
        # the bundled subset the PDFs use; browsers with a CJK font of their own never ask
        return FileResponse(
            CJK_FONT, media_type="font/ttf", headers={"Cache-Control": "public, max-age=604800"}
        )

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.openapi = lambda: _openapi(app)


def _add_error_handlers(app: FastAPI) -> None:
    """Errors as the API's JSON (paths under /v2/) or as a page (a redirect to sign in)."""
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(404, _missing)
    app.add_exception_handler(RequestValidationError, _invalid)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/v2/")


async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
    if _is_api(request):
        return JSONResponse(
            {"error_code": "CBC.0150", "error_msg": "Sign in: Basic, Bearer or session"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="koobill"'},
        )
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if _is_api(request):
        return JSONResponse(
            {"error_code": f"CBC.{exc.status_code}", "error_msg": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )
    return render_error(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def _missing(request: Request, exc: Exception) -> Response:
    return await _http_error(request, HTTPException(404, "Not found"))


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    if _is_api(request):
        return JSONResponse(
            {
                "error_code": "CBC.0100",
                "error_msg": "invalid parameter",
                "errors": [e.get("msg") for e in exc.errors()][:5],
            },
            status_code=400,
        )
    return render_error(request, 404, "Not found")
