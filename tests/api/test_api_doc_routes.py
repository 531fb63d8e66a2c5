"""docs/api.md lists every route of the app, and nothing else.

Every operation of the OpenAPI document must be a row of the route table (method and path;
the page may shorten path parameters to ``{id}`` and show a query string), every row must
be a real operation, and each route outside the document (docs, status page, metrics) must
be named in the section's text.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.routing import BaseRoute, Mount, Route

from portability.api import create_app
from portability.settings import Settings

API_DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`? ]*)[^`]*` \|", re.MULTILINE)


def _section() -> str:
    return API_DOC


def _shape(path: str) -> str:
    """The path with every parameter alike: ``{id}`` and ``{app_id}`` are the same slot."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _documented(api: FastAPI) -> set[tuple[str, str]]:
    """Every operation of the OpenAPI document, as (method, path shape)."""
    return {
        (method.upper(), _shape(path))
        for path, item in api.openapi()["paths"].items()
        for method in item
    }


def _undocumented(routes: list[BaseRoute], prefix: str = "") -> list[str]:
    """Paths of the routes left out of the document, included routers' too."""
    paths = []
    for route in routes:
        # FastAPI 0.16x keeps an included router as one entry (with the router and its
        # prefix); earlier versions copied its routes in, prefix applied.
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            paths += _undocumented(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Mount) or (isinstance(route, Route) and not route.include_in_schema):
            paths.append(prefix + route.path)
    return paths


def test_every_operation_is_a_row_of_the_route_table_and_every_row_an_operation(
    engine: Engine, api_settings: Settings
) -> None:
    operations = _documented(create_app(api_settings, engine))
    rows = {(method, _shape(path)) for method, path in _ROW.findall(_section())}

    assert sorted(operations - rows) == [], "routes missing from docs/api.md's route table"
    assert sorted(rows - operations) == [], "docs/api.md rows naming no route of the app"


def test_routes_outside_the_document_are_named_in_the_section(
    engine: Engine, api_settings: Settings
) -> None:
    api = create_app(api_settings, engine)
    section = _section()
    others = _undocumented(api.routes)

    missing = [
        path for path in others if re.search(rf"`(?:[A-Z]+ )?{re.escape(path)}`", section) is None
    ]

    assert {"/docs", "/docs/assets", "/status", "/metrics"} <= set(others)  # it sees them all
    assert missing == []
