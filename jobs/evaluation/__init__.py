"""Judging a model before it serves.

- :mod:`jobs.evaluation.holdout` ranks a time-based holdout with the candidate,
  a popularity baseline and the serving model (Spark);
- :mod:`jobs.evaluation.differential` compares two models' top-K lists for the
  same users;
- :mod:`jobs.evaluation.fairness` breaks quality down by user segment and
  exposure down by item popularity band;
- :mod:`jobs.evaluation.gates` turns those numbers into a promotion decision.
"""
