"""`python -m service`: serve `service.api.app:app` with uvicorn on RDVAE_HOST:RDVAE_PORT."""

from __future__ import annotations

import uvicorn

from service.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run("service.api.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
