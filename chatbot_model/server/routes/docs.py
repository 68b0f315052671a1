"""GET /openapi.json, /docs, /redoc: public by default; with CHATBOT_PUBLIC_DOCS=false they need the API key
(and are off when no CHATBOT_API_KEY is set). The docs pages get a CSP that admits their CDN assets and, by
hash, their one inline script; every other page keeps the strict policy of the middleware."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from chatbot_model.server.deps import DocsAccess

router = APIRouter(include_in_schema=False)
OPENAPI_URL = "/openapi.json"
CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_csp(html: str) -> str:
    """A CSP for a docs page: its CDN assets, and its inline scripts only by their sha256 hashes."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in _INLINE_SCRIPT.findall(html))
    return (f"default-src 'self'; script-src 'self' {CDN} {hashes}; style-src 'self' 'unsafe-inline' {CDN} "
            "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; img-src 'self' data: "
            f"https://fastapi.tiangolo.com {CDN}; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = docs_csp(response.body.decode())
    return response


@router.get(OPENAPI_URL)
async def openapi(request: Request, _access: DocsAccess) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request, _access: DocsAccess) -> HTMLResponse:
    return _page(get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - API"))


@router.get("/redoc")
async def redoc(request: Request, _access: DocsAccess) -> HTMLResponse:
    return _page(get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - API"))
