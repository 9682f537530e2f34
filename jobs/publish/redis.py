"""Publishing predictions to Redis under the contract in :mod:`jobs.redis_contract`.

A version's keys are written with pipelined batches under its own prefix;
readers only find them once the pointer key names that version, and the
pointer is flipped with one SET. Keys of versions that stop being served
expire after the retention period, so a rollback within it needs no rewrite.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pyarrow as pa
import redis

from jobs import redis_contract as contract
from jobs.publish import PublishVersion, SwitchOutcome

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 86_400
# A replaced version of the same date lingers this long for readers mid-request.
SUPERSEDED_GRACE_SECONDS = 60
PIPELINE_BATCH = 1_000
SCAN_COUNT = 1_000


class RedisPublisher:
    def __init__(self, client: redis.Redis,
                 retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> None:
        self.client = client
        self.retention_seconds = retention_seconds
        self.version: PublishVersion | None = None
        self.users = 0

    def prepare(self, version: PublishVersion) -> None:
        self.version = version
        # Leftovers of an earlier attempt with the same id would mix into this one.
        expire_version(self.client, version.publish_id, 0)

    def write(self, block: pa.RecordBatch) -> int:
        version = self._require_version()
        user_ids = block.column("user_id").to_pylist()
        items = block.column("items").to_pylist()
        scores = block.column("scores").to_pylist()
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(user_ids), PIPELINE_BATCH):
            stop = start + PIPELINE_BATCH
            for user_id, user_items, user_scores in zip(
                user_ids[start:stop], items[start:stop], scores[start:stop], strict=True
            ):
                pipe.set(contract.user_key(version.publish_id, user_id),
                         contract.encode_items(user_items, user_scores))
            pipe.execute()
        self.users += len(user_ids)
        return len(user_ids)

    def write_fallback(self, popular: pa.Table) -> None:
        version = self._require_version()
        self.client.set(
            contract.popular_key(version.publish_id),
            contract.encode_items(popular.column("item_id").to_pylist(),
                                  popular.column("score").to_pylist()),
        )

    def switch(self, outcome: SwitchOutcome) -> None:
        """Write the version's meta, then flip the pointer if Postgres served it."""
        version = self._require_version()
        meta = {
            "run_id": version.run_id,
            "model_version": version.model_version,
            "logical_date": version.logical_date.isoformat(),
            "k": version.k,
            "users": self.users,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.client.set(contract.meta_key(version.publish_id), contract.encode_meta(meta))
        for publish_id in outcome.superseded:
            expire_version(self.client, publish_id, SUPERSEDED_GRACE_SECONDS)
        if not outcome.served:
            expire_version(self.client, version.publish_id, self.retention_seconds)
            logger.info("redis: version %d written, not served", version.publish_id)
            return
        self.client.set(contract.pointer_key(), str(version.publish_id))
        if (outcome.previous_served is not None
                and outcome.previous_served != version.publish_id
                and outcome.previous_served not in outcome.superseded):
            expire_version(self.client, outcome.previous_served, self.retention_seconds)
        logger.info("redis: pointer now at version %d (%d users)", version.publish_id, self.users)

    def abort(self) -> None:
        if self.version is not None:
            expire_version(self.client, self.version.publish_id, 0)
            logger.info("redis: staged version %d discarded", self.version.publish_id)

    def _require_version(self) -> PublishVersion:
        if self.version is None:
            raise RuntimeError("prepare() a version before writing or switching it")
        return self.version


def expire_version(client: redis.Redis, publish_id: int, seconds: int) -> int:
    """Expire every key of a version in ``seconds`` (0 deletes them now)."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=contract.version_pattern(publish_id), count=SCAN_COUNT):
        if seconds > 0:
            pipe.expire(key, seconds)
        else:
            pipe.unlink(key)
        count += 1
        if count % PIPELINE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    return count
