"""What a read returns, as `batchscore recs --json` prints it."""

import json

from jobs.client import Item, Recommendations


def test_a_reads_json_names_each_items_fields() -> None:
    recs = Recommendations(user_id=42, items=[Item(7, 0.5), Item(3, 0.25)], run_id="r1",
                           model_version=2, source="predictions")
    assert json.loads(json.dumps(recs.to_json())) == {
        "user_id": 42,
        "items": [{"item_id": 7, "score": 0.5}, {"item_id": 3, "score": 0.25}],
        "run_id": "r1", "model_version": 2, "source": "predictions"}
    assert (recs.items[0].item_id, recs.items[0].score) == (7, 0.5)
