"""Gateways started together on one database: each comes up, and what start-up creates
(the schema, the demo models) exists once, not once per gateway."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import func, select

from maas.config import AuthSettings, Settings
from maas.registry.db import create_engine_for
from maas.registry.tables import Model, ModelVersion
from maas.services import open_services


def test_gateways_starting_at_once_register_the_demo_once(
    database_url: str, tmp_path: Path
) -> None:
    starting = threading.Barrier(2)
    failures: list[BaseException] = []

    async def start(home: Path) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            home=home,
            database_url=database_url,
            storage={"artifact_url": str(tmp_path / "shared-store")},
            auth=AuthSettings(enabled=False),
            demo=True,
            demo_models=["iris"],
        )
        starting.wait()
        async with open_services(settings) as services:
            await services.models.wait_loaded()

    def gateway(name: str) -> None:
        try:
            asyncio.run(start(tmp_path / name))
        except BaseException as exc:
            failures.append(exc)

    gateways = [threading.Thread(target=gateway, args=(name,)) for name in ("a", "b")]
    for thread in gateways:
        thread.start()
    for thread in gateways:
        thread.join()
    assert failures == []
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            versions = connection.scalar(
                select(func.count())
                .select_from(ModelVersion)
                .join(Model, ModelVersion.model_id == Model.id)
                .where(Model.name == "iris")
            )
    finally:
        engine.dispose()
    assert versions == 1
