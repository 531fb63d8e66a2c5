"""``/docs`` and ``/redoc`` work offline: every script, style and icon comes from the API.

Checked twice: the pages name no other host and their assets are served; and Chromium,
with every host name but 127.0.0.1 unresolvable, renders Swagger UI with every operation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.api_helpers import TestClient
from browser import run_chromium
from portability.api import create_app
from portability.consent import create_store_engine, init_schema
from portability.settings import Settings
from replay_harness import serve_api

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
_CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
CHROMIUM_TIMEOUT_S = 60.0


def _references(html: str) -> list[str]:
    return [first or second for first, second in _REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_name_no_other_host_and_their_assets_are_served(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text

    references = _references(html)

    assert "/openapi.json" in references
    assert re.search(r"https?://|//[a-z]", html, re.IGNORECASE) is None, html
    assets = [ref for ref in references if ref != "/openapi.json"]
    assert assets  # the page's scripts and styles
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert _CONTENT_TYPES[Path(asset).suffix] in served.headers["content-type"], asset
    scripts = [ref for ref in assets if ref.endswith(".js")]
    assert all(len(client.get(script).content) > 100_000 for script in scripts)


def test_swagger_ui_does_not_call_the_public_validator(client: TestClient) -> None:
    # Swagger UI's default validator badge sends the document to validator.swagger.io.
    assert '"validatorUrl": null' in client.get("/docs").text


async def test_swagger_ui_renders_every_operation_offline(
    api_settings: Settings, chromium: str, tmp_path: Path
) -> None:
    # One store is enough (the page reads no data): SQLite.
    engine = create_store_engine(f"sqlite:///{tmp_path / 'consents.db'}")
    init_schema(engine)
    api = create_app(api_settings, engine)
    operations = {
        path
        for path, item in api.openapi()["paths"].items()
        if item  # every documented path
    }
    async with serve_api(api) as url:
        dom = await run_chromium(
            chromium,
            tmp_path / "profile",
            # Offline: no host but the API's resolves, so a CDN asset could not load.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{url}/docs",
            timeout_s=CHROMIUM_TIMEOUT_S,
        )
    engine.dispose()

    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))

    assert rendered == operations, dom[-2000:]
    assert "OAS 3.1" in dom  # Swagger UI 5: it reads FastAPI's OpenAPI 3.1 document
