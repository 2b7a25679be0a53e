"""/docs and /redoc work without internet: their Swagger UI and ReDoc assets come from the API itself."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings


def test_docs_pages_load_their_assets_from_the_api(settings: Settings) -> None:
    with TestClient(create_app(settings, start_runner=False)) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert "cdn." not in html and "googleapis" not in html, page  # used to be a blank page offline
            assets = [part.split('"')[0] for part in html.split('src="')[1:]]
            assets += [part.split('"')[0] for part in html.split('href="')[1:] if ".css" in part.split('"')[0]]
            assert assets, page
            for asset in assets:
                assert asset.startswith("/"), asset
                answer = client.get(asset)
                assert answer.status_code == 200 and len(answer.content) > 10_000, asset
