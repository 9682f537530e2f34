"""Scoring: the Spark job that scores every active user with a model (``score``), its
pure transforms (``transforms``) and what it shares with training about a model and
its input (``model``)."""
