"""What is served and where: the record ``batchscore status`` prints."""

from __future__ import annotations

from typing import Any

from jobs.contracts.redis import Keyspace, decode_meta
from jobs.lifecycle import registry
from jobs.platform import runs, services
from jobs.platform.config import Settings
from jobs.platform.db import applied_migrations, migrations, statement
from jobs.platform.redis_client import connect
from jobs.publish.reconcile import disagreement


def status(settings: Settings) -> dict[str, Any]:
    """Servers (URLs without passwords), migrations, the serving model, the version each
    store serves, the last run, and why the stores disagree (None when they do not)."""
    endpoints = services.resolve(settings)
    engine = services.database(settings)
    applied = applied_migrations(engine)
    record: dict[str, Any] = {
        "home": str(settings.home),
        "embedded": {"postgres": settings.database_url is None,
                     "redis": settings.redis_url is None},
        "database_url": services.redacted(endpoints.database_url),
        "redis_url": services.redacted(endpoints.redis_url),
        "redis_prefix": settings.names.redis_prefix,
        "migrations": {"applied": applied,
                       "pending": [m.version for m in migrations() if m.version not in applied]},
    }
    serving = registry.serving_or_none(engine)
    record["serving_model"] = serving.version if serving else None
    with engine.connect() as conn:
        served = conn.execute(statement(conn,
            "SELECT publish_id, run_id, model_version, logical_date, users, rows, published_at"
            " FROM {bi}.prediction_versions WHERE is_serving")).mappings().first()
        record["interactions"] = conn.execute(
            statement(conn, "SELECT count(*) FROM {schema}.interactions")).scalar_one()
    record["postgres_served"] = dict(served) if served else None
    client = connect(endpoints.redis_url)
    keys = Keyspace(settings.names.redis_prefix)
    pointer = client.get(keys.pointer_key())
    record["redis_served"] = None
    if pointer is not None:
        meta = client.get(keys.meta_key(int(pointer)))
        record["redis_served"] = {"publish_id": int(pointer),
                                  **(decode_meta(meta) if meta else {})}
    last = runs.list_runs(engine, limit=1)
    record["last_run"] = last[0].to_json() if last else None
    record["stores_disagree"] = disagreement(engine, client, keys)
    client.close()
    engine.dispose()
    return record
