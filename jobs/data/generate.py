"""Synthetic interactions with the structure of real ones.

Items belong to latent topics and have heavy-tailed (Zipf) popularity; users
have heavy-tailed (log-normal) activity and a taste concentrated on a few
topics, so a collaborative model can beat the popularity baseline. Events are
spread over the given days. The same arguments give the same interactions.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO

import numpy as np
from sqlalchemy.engine import Engine

from jobs.data.store import copy_interactions, day_end, rows_to_csv

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
# Events are assigned topics in chunks so memory stays flat for millions of users.
CHUNK_EVENTS = 1_000_000


def last_whole_day() -> date:
    """Yesterday (UTC), the default last day of generated events: they fill whole days,
    and the input contract quarantines events stamped after the time of loading."""
    return datetime.now(UTC).date() - timedelta(days=1)


@dataclass(frozen=True)
class GenerateConfig:
    users: int
    items: int
    days: int
    seed: int
    end_date: date
    mean_events_per_user: float = 25.0

    def __post_init__(self) -> None:
        for name in ("users", "items", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.items < 10:
            raise ValueError(f"--items must be at least 10, got {self.items}")


@dataclass(frozen=True)
class Interactions:
    """Columns of equal length; ``event_at`` in Unix seconds."""

    user_id: np.ndarray
    item_id: np.ndarray
    rating: np.ndarray
    event_at: np.ndarray

    def __len__(self) -> int:
        return len(self.user_id)


def generate(config: GenerateConfig) -> Interactions:
    """Draw interactions; pure given ``config``."""
    rng = np.random.default_rng(config.seed)
    n_topics = int(np.clip(config.items // 40, 4, 24))

    item_topic = rng.integers(0, n_topics, size=config.items)
    popularity = 1.0 / np.arange(1, config.items + 1) ** 1.0
    popularity = popularity[rng.permutation(config.items)]

    taste = rng.dirichlet(np.full(n_topics, 0.25), size=config.users)
    activity = rng.lognormal(np.log(config.mean_events_per_user) - 0.5, 1.0, size=config.users)
    activity = np.clip(activity.round(), 3, max(3, config.items // 3)).astype(np.int64)

    user_index = np.repeat(np.arange(config.users), activity)
    # A small share of events follows global popularity rather than taste.
    from_taste = rng.random(len(user_index)) < 0.85
    topic_cdf = np.cumsum(taste, axis=1)
    draws = rng.random(len(user_index))
    event_topic = np.empty(len(user_index), dtype=np.int64)
    for start in range(0, len(user_index), CHUNK_EVENTS):
        chunk = slice(start, start + CHUNK_EVENTS)
        below = topic_cdf[user_index[chunk]] < draws[chunk, None]
        event_topic[chunk] = np.minimum(below.sum(axis=1), n_topics - 1)

    event_item = np.empty(len(user_index), dtype=np.int64)
    global_cdf = np.cumsum(popularity) / popularity.sum()
    untargeted = ~from_taste
    event_item[untargeted] = np.searchsorted(global_cdf, rng.random(untargeted.sum()))
    for topic in range(n_topics):
        members = np.flatnonzero(item_topic == topic)
        chosen = from_taste & (event_topic == topic)
        if not chosen.any():
            continue
        if members.size == 0:
            event_item[chosen] = np.searchsorted(global_cdf, rng.random(chosen.sum()))
            continue
        cdf = np.cumsum(popularity[members]) / popularity[members].sum()
        event_item[chosen] = members[np.searchsorted(cdf, rng.random(chosen.sum()))]
    event_item = np.minimum(event_item, config.items - 1)

    # One event per (user, item): repeated draws of the same pair collapse.
    pair = user_index * config.items + event_item
    _, first = np.unique(pair, return_index=True)
    first.sort()
    user_index, event_item = user_index[first], event_item[first]

    affinity = taste[user_index, item_topic[event_item]] * n_topics
    rating = np.clip(np.round(2.5 + np.log1p(affinity) + rng.normal(0, 0.8, len(first))), 1, 5)

    end = int(day_end(config.end_date).timestamp())
    start = end - config.days * SECONDS_PER_DAY
    event_at = rng.integers(start, end, size=len(first))

    return Interactions(
        user_id=user_index + 1,
        item_id=event_item + 1,
        rating=rating.astype(np.float64),
        event_at=event_at.astype(np.int64),
    )


@contextmanager
def write_generated(interactions: Interactions) -> Iterator[IO[str]]:
    """The generated columns as a COPY-ready CSV file, rewound for reading."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as staged:
        rows_to_csv(
            zip(interactions.user_id.tolist(), interactions.item_id.tolist(),
                interactions.rating.tolist(), interactions.event_at.tolist(), strict=True),
            staged,
        )
        staged.seek(0)
        yield staged


def generate_and_load(engine: Engine, config: GenerateConfig, *, replace: bool = False) -> int:
    """Generate a synthetic data set and load it into the interactions table; the rows."""
    interactions = generate(config)
    logger.info("generated %d interactions for %d users x %d items over %d days",
                len(interactions), config.users, config.items, config.days)
    with write_generated(interactions) as rows_csv:
        return copy_interactions(engine, rows_csv, replace=replace, rows=len(interactions))
