import pytest

from jobs.training.fairness import exposure_by_band, fairness_report, popularity_bands


def test_bands_split_the_catalogue_by_popularity() -> None:
    popularity = {item: 100 - item for item in range(1, 21)}  # item 1 most popular
    bands = popularity_bands(popularity)
    assert [item for item, band in bands.items() if band == "head"] == [1, 2]  # 10% of 20
    assert [item for item, band in bands.items() if band == "torso"] == [3, 4, 5, 6, 7, 8]
    assert sum(1 for band in bands.values() if band == "tail") == 12


def test_exposure_reports_slot_shares_per_band() -> None:
    popularity = {item: 100 - item for item in range(1, 21)}
    rows = exposure_by_band({"als": {1: [1, 2, 15, 16], 2: [1, 3, 17, 18]}}, popularity)
    head, torso, tail = rows
    assert (head["band"], head["items"]) == ("head", 2)
    assert head["als_slot_share"] == 3 / 8   # items 1, 2, 1
    assert torso["als_slot_share"] == 1 / 8  # item 3
    assert tail["als_slot_share"] == 4 / 8
    assert head["interaction_share"] == pytest.approx((99 + 98) / sum(popularity.values()),
                                                      abs=1e-6)


def test_quality_per_activity_segment_and_attribute() -> None:
    users = range(1, 16)
    holdout = {user: {100} for user in users}
    activity = {user: user for user in users}  # 1..15 events: tertiles at 5.67 and 10.33
    # Users 1-5 get the relevant item first, the others never.
    recs = {"als": {user: [100, 101] if user <= 5 else [101, 102] for user in users}}
    attributes = {user: {"plan": "paid" if user % 3 == 0 else "free", "email": f"u{user}"}
                  for user in users}
    report = fairness_report(recs, holdout, activity, {100: 5, 101: 4, 102: 3}, k=2,
                             attributes=attributes)
    low, medium, high = report["quality"]["activity"]
    assert (low["segment"], low["users"]) == ("low (<= 5 events)", 5)
    assert low["als"]["ndcg_at_k"] == 1.0
    assert medium["als"]["ndcg_at_k"] == 0.0 and high["als"]["ndcg_at_k"] == 0.0
    plans = {row["segment"]: row for row in report["quality"]["attribute:plan"]}
    assert plans["paid"]["users"] == 5 and plans["free"]["users"] == 10
    # Paid users 3, users 1, 2, 4, 5 free: precision@2 of the free = (4 * 0.5) / 10.
    assert plans["free"]["als"]["precision_at_k"] == pytest.approx(0.2)
    # One value per user is an identifier, not a segment.
    assert "attribute:email" not in report["quality"]
