"""Running the contracts in ``schemas/`` with Great Expectations.

Suites are JSON files in ``schemas/`` (GX's own suite layout, with ``meta``
saying how a failure is handled). Each run validates a pandas frame through a
GX checkpoint in a file context under ``BATCHSCORE_HOME/gx``, which also
writes the Data Docs site, and turns the result into a :class:`Report` whose
message names the expectation, the column, how many rows and a few examples.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

logger = logging.getLogger(__name__)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
DATASOURCE = "batchscore"
MAX_EXAMPLES = 3


class ContractError(ValueError):
    """Data failed a contract; the message says which expectations and where."""

    def __init__(self, message: str, reports: list[Report]) -> None:
        super().__init__(message)
        self.reports = reports

    @property
    def docs_urls(self) -> dict[str, str]:
        return {report.suite: report.docs_url for report in self.reports if report.docs_url}


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    description: str
    level: str
    unexpected_count: int | None
    element_count: int | None
    observed: Any
    examples: list[str]
    bounds: str | None = None

    def describe(self) -> str:
        target = f"({self.column})" if self.column else ""
        head = f"{self.expectation}{target}: {self.description}"
        if self.bounds:
            head += f" ({self.bounds})"
        if self.unexpected_count is not None and self.element_count is not None:
            head += f" — {self.unexpected_count} of {self.element_count} rows fail"
        elif self.observed is not None:
            head += f" — observed {self.observed}"
        if self.examples:
            head += "; e.g. " + "; ".join(self.examples)
        return head


@dataclass
class Report:
    suite: str
    success: bool
    row_count: int
    failures: list[Failure] = field(default_factory=list)
    # Row index -> the descriptions of the row-level expectations it failed.
    row_failures: dict[Any, list[str]] = field(default_factory=dict)
    docs_url: str | None = None

    def failures_at(self, *levels: str) -> list[Failure]:
        return [failure for failure in self.failures if failure.level in levels]


def load_contracts_config() -> dict[str, Any]:
    return dict(json.loads((SCHEMAS_DIR / "contracts.json").read_text()))


def load_suite_spec(name: str) -> dict[str, Any]:
    path = SCHEMAS_DIR / f"{name}.suite.json"
    if not path.exists():
        raise FileNotFoundError(f"expectation suite {path} not found")
    return dict(json.loads(path.read_text()))


class Validator:
    """Validates frames against the suites, writing Data Docs under ``home/gx/<name>``.

    Each run gets its own GX project (``name`` is the run id), so runs that
    overlap, as a backfill's may, never share GX's stores.
    """

    def __init__(self, home: Path, name: str = "by-hand") -> None:
        self.root = home / "gx" / name
        self._context: AbstractDataContext | None = None

    @property
    def context(self) -> AbstractDataContext:
        if self._context is None:
            # GX would otherwise try to send usage statistics.
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.root.mkdir(parents=True, exist_ok=True)
            context = gx.get_context(mode="file", project_root_dir=str(self.root))
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            context.variables.save()
            self._context = context
        return self._context

    def validate(
        self,
        suite_name: str,
        frame: pd.DataFrame,
        parameters: Mapping[str, Any],
        *,
        unavailable: set[str] | frozenset[str] = frozenset(),
        row_label: str = "row",
        run_name: str | None = None,
    ) -> Report:
        """Validate ``frame``; expectations whose ``meta.requires`` is unavailable are skipped."""
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        spec = load_suite_spec(suite_name)
        context = self.context
        suite = ExpectationSuite(name=spec["name"], meta=spec.get("meta", {}))
        for expectation in spec["expectations"]:
            if expectation.get("meta", {}).get("requires") in unavailable:
                continue
            # Match on every argument: GX would otherwise treat two expectations
            # on the same column (a lower and an upper bound) as one.
            suite.add_expectation_configuration(ExpectationConfiguration(
                type=expectation["type"], kwargs=expectation["kwargs"],
                meta=expectation.get("meta", {}),
            ), match_type="runtime")
        suite = context.suites.add_or_update(suite)
        datasource = context.data_sources.add_or_update_pandas(DATASOURCE)
        try:
            asset = datasource.get_asset(suite_name)
        except LookupError:
            asset = datasource.add_dataframe_asset(suite_name)
        try:
            batch_definition = asset.get_batch_definition("whole")
        except (KeyError, LookupError, ValueError):
            batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(data=batch_definition, suite=suite, name=suite_name)
        )
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE"},
        ))
        # GX reports unexpected rows by index label only for an unnamed index.
        frame = frame.rename_axis(None)
        result = checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=dict(parameters),
            run_id=RunIdentifier(run_name=run_name) if run_name else None,
        )
        identifier, validation = next(iter(result.run_results.items()))
        urls = context.get_docs_sites_urls(resource_identifier=identifier)
        report = Report(
            suite=suite_name,
            success=bool(validation.success),
            row_count=len(frame),
            docs_url=urls[0]["site_url"] if urls else None,
        )
        for outcome in validation.results:
            if outcome.success:
                continue
            report.failures.append(self._failure(outcome, frame, row_label, report))
        logger.info("contract %s on %d rows: %s (%d expectations failed)", suite_name,
                    len(frame), "passed" if report.success else "FAILED", len(report.failures))
        return report

    @staticmethod
    def _failure(outcome: Any, frame: pd.DataFrame, row_label: str, report: Report) -> Failure:
        config = outcome.expectation_config
        meta = config.meta or {}
        kwargs = config.kwargs
        result = outcome.result or {}
        column = kwargs.get("column") or (
            ",".join(kwargs["column_list"]) if "column_list" in kwargs else None
        ) or ("/".join((kwargs["column_A"], kwargs["column_B"])) if "column_A" in kwargs else None)
        indexes = list(result.get("unexpected_index_list") or [])
        description = str(meta.get("description", ""))
        if meta.get("level") == "row":
            for index in indexes:
                report.row_failures.setdefault(index, []).append(description)
        examples = [describe_row(frame, index, row_label) for index in indexes[:MAX_EXAMPLES]]
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            examples.append(f"error: {outcome.exception_info.get('exception_message')}")
        return Failure(
            bounds=describe_bounds(kwargs),
            expectation=config.type,
            column=column,
            description=description,
            level=str(meta.get("level", "dataset")),
            unexpected_count=result.get("unexpected_count"),
            element_count=result.get("element_count"),
            observed=result.get("observed_value"),
            examples=examples,
        )


def describe_bounds(kwargs: Mapping[str, Any]) -> str | None:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        return None
    if high is None:
        return f"expected at least {format_value(low)}"
    if low is None:
        return f"expected at most {format_value(high)}"
    return f"expected {format_value(low)} to {format_value(high)}"


def describe_row(frame: pd.DataFrame, index: Any, row_label: str) -> str:
    try:
        values = frame.loc[index]
    except KeyError:
        return f"{row_label} {index}"
    if isinstance(values, pd.DataFrame):
        values = values.iloc[0]
    fields = ", ".join(f"{name}={format_value(value)}" for name, value in values.items())
    return f"{row_label} {index}: {fields}"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return str(value)


def failure_message(title: str, failures: list[Failure], reports: list[Report]) -> str:
    lines = [f"{title}: {len(failures)} expectation(s) failed"]
    lines += [f"  - {failure.describe()}" for failure in failures]
    lines += [f"  Data Docs: {report.docs_url}" for report in reports if report.docs_url]
    return "\n".join(lines)
