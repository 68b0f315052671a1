"""GET /openapi.json, /docs, /redoc: public by default; with CHATBOT_PUBLIC_DOCS=false they need the API key
(and are off when no CHATBOT_API_KEY is set).

The pages work offline: Swagger UI, ReDoc and the favicon come from the files the `fastapi-offline` package
ships, served here under /docs-assets/ (public, like any static file; no fonts are loaded). Their CSP names no
other host: scripts from 'self' plus the page's one inline script by its sha256 hash."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from chatbot_model.server.deps import DocsAccess

router = APIRouter(include_in_schema=False)
OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs-assets"
ASSETS = {  # the files the pages load, and their media types; nothing else is served from the package
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_csp(html: str) -> str:
    """A CSP for a docs page: assets from 'self' only, its inline scripts only by their sha256 hashes.

    Styles may be inline (ReDoc and Swagger UI set them at run time), images may be data: URIs (Swagger UI's
    icons) and ReDoc's search runs in a blob: worker; no other origin is named."""
    script_src = " ".join(["'self'"] + [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                                        for s in _INLINE_SCRIPT.findall(html)])
    return (f"default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
            "font-src 'self'; img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = docs_csp(response.body.decode())
    return response


@router.get(OPENAPI_URL)
async def openapi(request: Request, _access: DocsAccess) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request, _access: DocsAccess) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _page(get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}", title=f"{request.app.title} - API",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # no badge from the public validator service: the spec is never sent anywhere
        swagger_ui_parameters={"validatorUrl": None}))


@router.get("/redoc")
async def redoc(request: Request, _access: DocsAccess) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _page(get_redoc_html(
        openapi_url=f"{root}{OPENAPI_URL}", title=f"{request.app.title} - API",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False))


@router.get(ASSETS_URL + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no docs asset {name!r}")
    path = files("fastapi_offline") / "static" / name
    return FileResponse(str(path), media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
