"""Wiring of the gateway: settings, database pool, the FastAPI app under uvicorn."""

from __future__ import annotations

import uvicorn
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


def main() -> None:
    from gateway.app import create_app

    settings = GatewaySettings()
    configure_logging(settings.log_format, settings.log_level, service="gateway")
    pool = pool_from_settings(name="gateway")
    pool.open(wait=False)
    try:
        uvicorn.run(create_app(pool), host=settings.host, port=settings.gateway_port,
                    log_config=None, timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    finally:
        pool.close()
