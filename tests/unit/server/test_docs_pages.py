"""Swagger UI from the installed package: the page points at local assets, and only the listed assets are served."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from ml_production_service.server.docs import ASSETS, ASSETS_DIR, ASSETS_URL, DOCS_URL, add_docs


@pytest.fixture(scope="module")
def docs() -> Iterator[TestClient]:
    """A bare app with nothing but the docs pages, its schema at a non-default URL."""
    app = FastAPI(title="Docs Test", openapi_url="/schema.json", docs_url=None, redoc_url=None)
    add_docs(app)
    with TestClient(app) as client:
        yield client


def test_the_page_loads_swagger_ui_from_the_local_assets(docs: TestClient) -> None:
    """/docs is HTML naming the app, its schema URL and the three local assets; no CDN."""
    page = docs.get(DOCS_URL)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Docs Test - Swagger UI</title>" in page.text
    assert "'/schema.json'" in page.text
    for name in ASSETS:
        assert f"{ASSETS_URL}/{name}" in page.text
    assert "://" not in page.text  # every URL is relative: nothing is fetched from another host


def test_the_page_falls_back_to_the_default_schema_url() -> None:
    """An app without an openapi_url still gets a page pointing at /openapi.json."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    add_docs(app)
    with TestClient(app) as client:
        assert "'/openapi.json'" in client.get(DOCS_URL).text


@pytest.mark.parametrize(("name", "media_type"), list(ASSETS.items()))
def test_each_listed_asset_is_the_packages_file(docs: TestClient, name: str, media_type: str) -> None:
    """Each asset is the installed file's bytes, with its media type and a one-day cache lifetime."""
    answer = docs.get(f"{ASSETS_URL}/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == media_type
    assert answer.headers["cache-control"] == "max-age=86400"
    assert answer.content == (ASSETS_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("redoc.standalone.js", id="packaged-but-not-listed"),
        pytest.param("index.html", id="absent"),
        pytest.param("..%2F__init__.py", id="encoded-traversal"),
        pytest.param("SWAGGER-UI.CSS", id="other-case"),
    ],
)
def test_any_other_name_is_404(docs: TestClient, name: str) -> None:
    """Only the fixed list is served: a file in the package folder but not listed is not, nor any path."""
    if name == "redoc.standalone.js":
        assert (ASSETS_DIR / name).is_file()  # the refusal is the list's doing, not a missing file
    assert docs.get(f"{ASSETS_URL}/{name}").status_code == 404
