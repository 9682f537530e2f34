import numpy as np
import pytest

from jobs.contracts.canary import in_canary, stable_hash


def test_stable_hash_is_splitmix64() -> None:
    # SplitMix64's first output for seed 0 is its finaliser applied to 0 + golden gamma:
    # the published reference value 0xE220A8397B1DCDAF.
    assert int(stable_hash(np.array([0]))[0]) == 0xE220A8397B1DCDAF


def test_assignment_is_stable_and_matches_the_fraction() -> None:
    users = np.arange(1, 200_001)
    first = in_canary(users, 0.1)
    assert np.array_equal(first, in_canary(users.copy(), 0.1))
    # 10% of 200k users within half a percentage point.
    assert first.mean() == pytest.approx(0.10, abs=0.005)
    # A larger canary keeps everyone the smaller one had.
    assert np.all(in_canary(users, 0.25)[first])
    assert in_canary(users, 0.25).mean() == pytest.approx(0.25, abs=0.005)


def test_fraction_outside_zero_one_is_refused() -> None:
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            in_canary(np.array([1]), fraction)
