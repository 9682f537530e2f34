"""Which model versions a nightly run uses, and the requests it refuses.

A run scores with the model serving as of its date, or a pinned version; a shadow run
with its candidate instead, a canary run with the serving model and its candidate for a
share of the users. A model its gates or a rollback refused serves only under
``--force`` with a reason, and a run date after today only when allowed. A shadow or
canary run that got through moves its candidate forward in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.engine import Engine

from jobs.lifecycle import registry
from jobs.orchestration.run_state import NightlyConfig, RunRequestError, RunState
from jobs.platform.artifacts import artifact_path
from jobs.platform.provenance import current_user

# Statuses a model may not serve in without --force and a reason: its gates said no.
REFUSED_MODEL_STATUSES = ("rejected", "rolled_back")


@dataclass(frozen=True)
class ModelChoice:
    """The model versions one run scores with."""

    # Scores every user: the serving (or pinned) model, or a shadow run's candidate.
    model: registry.ModelVersion
    shadow: bool
    # A canary run's candidate, for a share of the users.
    canary: registry.ModelVersion | None
    # Versions refused by their gates or a rollback that serve under --force.
    forced: list[registry.ModelVersion]

    @property
    def kind(self) -> str:
        """serve, shadow or canary: the plan of publish steps the run follows."""
        return "shadow" if self.shadow else "canary" if self.canary else "serve"


def choose_models(engine: Engine, config: NightlyConfig) -> ModelChoice:
    """The versions ``config`` asks for, or :class:`RunRequestError` saying why not."""
    if config.shadow_version is not None and config.canary_version is not None:
        raise RunRequestError("a run is a shadow run or a canary run, not both")
    if config.force and not (config.reason or "").strip():
        raise RunRequestError("--force needs --reason: why the model serves despite its "
                              "gates is recorded")
    shadow = trial_model(engine, config.shadow_version, "shadow")
    canary = trial_model(engine, config.canary_version, "canary")
    model = shadow or registry.model_for_date(engine, config.run_date, config.model_version)
    gated = [(chosen, kind) for chosen, kind in
             ((None if shadow else model, "--model-version"), (canary, "--canary"))
             if chosen is not None and chosen.status in REFUSED_MODEL_STATUSES]
    for chosen, option in gated:
        if not config.force:
            raise RunRequestError(
                f"model version {chosen.version} is {chosen.status.replace('_', ' ')}: its "
                f"gates or a rollback keep it from serving ({option}); pass --force with "
                "--reason to serve it anyway")
    return ModelChoice(model=model, shadow=shadow is not None, canary=canary,
                       forced=[chosen for chosen, _ in gated])


def refuse_future_date(run_date: date, today: date, allowed: bool) -> None:
    """Refuse a run date after ``today`` (UTC) unless ``allowed``.

    A date ahead of the clock (a typo, or events stamped years ahead picked as
    the newest date) would take over serving, and no normal run would serve
    again until someone passed --serve-older-date.
    """
    if run_date > today and not allowed:
        raise RunRequestError(
            f"run date {run_date} is after today ({today}, UTC): a future date would take "
            "over serving from every normal run after it; nothing was run. Name the date "
            "with --run-date (the default is the newest event's), or pass --allow-future-date "
            "(the DAG param allow_future_date) to run it anyway")


def trial_model(engine: Engine, version: int | None,
                kind: str) -> registry.ModelVersion | None:
    """The version a shadow or canary run tries out; it must not be the serving one."""
    if version is None:
        return None
    model = registry.get(engine, version)
    if model.status == "serving":
        raise RunRequestError(
            f"model version {version} already serves; a {kind} run tries out another version")
    return model


def canary_fraction(fraction: float | None) -> float:
    """The share of users a canary serves: ``fraction``, or the contracts' default."""
    from jobs.contracts.canary import check_fraction
    from jobs.contracts.engine import load_contracts_config

    if fraction is None:
        fraction = float(load_contracts_config()["canary"]["default_fraction"])
    return check_fraction(fraction)


def model_path(artifact_uri: str) -> str:
    """Where a model version's Spark model is; it must be there."""
    path = artifact_path(artifact_uri)
    if not path.exists():
        raise FileNotFoundError(f"the model's artifact {path} is missing")
    return str(path)


def record_trial(engine: Engine, state: RunState) -> RunState:
    """A shadow or canary run that got this far moves its model forward in the registry."""
    if state.kind == "shadow":
        registry.record_trial(engine, state.model_version, "shadow",
                              f"shadow run {state.run_id} for {state.run_date}",
                              current_user())
    else:
        registry.record_trial(engine, state.canary_model_version, "canary",
                              f"canary run {state.run_id} for {state.run_date}: "
                              f"{state.canary_fraction:.0%} of users", current_user())
    return state
