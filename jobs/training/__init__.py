"""Training and evaluation: the Spark job that fits ALS and registers a version
(``train``), and what judges a model before it serves:

- ``holdout`` ranks a time-based holdout with the candidate, a popularity
  baseline and the serving model (Spark), scored by ``metrics``;
- ``differential`` compares two models' top-K lists for the same users;
- ``fairness`` breaks quality down by user segment and exposure down by item
  popularity band;
- ``gates`` turns those numbers into a promotion decision.
"""
