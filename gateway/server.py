"""Wiring of the gateway: settings, database pool, object store, challenge, uvicorn."""

from __future__ import annotations

import uvicorn
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfr.db.pool import pool_from_settings
from mfr.logs import configure_logging
from mfr.settings import GATEWAY_PORT


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MFR_", extra="ignore")

    host: str = "127.0.0.1"
    gateway_port: int = GATEWAY_PORT
    log_format: str = "json"
    log_level: str = "INFO"
    shutdown_grace_s: float = 30.0
    # No default, and not empty: a gateway without an organisers' token does not start.
    admin_token: SecretStr = Field(min_length=16)


def main() -> None:
    from gateway.app import create_app
    from mfr.storage import ObjectStore
    from services.ranker.serving import serving_challenge

    settings = GatewaySettings()
    configure_logging(settings.log_format, settings.log_level, service="gateway")
    challenge, _ = serving_challenge()
    store = ObjectStore.from_settings()
    pool = pool_from_settings(name="gateway")
    pool.open(wait=False)
    try:
        app = create_app(pool, store, challenge, admin_token=settings.admin_token.get_secret_value())
        uvicorn.run(app, host=settings.host, port=settings.gateway_port, log_config=None,
                    timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    finally:
        pool.close()
