"""Load an MLeap bundle (zip file or directory) and score LeapFrames with it, without Spark."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jobs.bundles.format import BundleError, BundleSource, NodeSpec
from jobs.bundles.leapframe import LeapFrame
from jobs.bundles.ops import BUILDERS, Pipeline, Transformer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle's metadata (``bundle.json``) and its root transformer."""

    path: Path
    info: dict[str, Any]
    root: Transformer

    def transform(self, frame: LeapFrame) -> LeapFrame:
        """The frame with every column each stage adds, in stage order."""
        result = self.root.transform(frame)
        logger.info("scored %d rows with bundle %s", len(result.rows), self.path)
        return result


def load_bundle(path: Path) -> LoadedBundle:
    """Load a bundle; raise BundleError naming the op and node of anything unsupported."""
    source = BundleSource(path)
    try:
        info = source.bundle_info()
        root = _load_node(source, PurePosixPath("root"))
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        # A value of the wrong shape somewhere in the JSON files.
        raise BundleError(f"{path} is a malformed bundle ({type(err).__name__}: {err})"
                          ) from None
    finally:
        source.close()
    logger.info("loaded bundle %s (%s, MLeap %s)", path, info.get("name"), info.get("version"))
    return LoadedBundle(path=path, info=info, root=root)


def _load_node(source: BundleSource, folder: PurePosixPath) -> Transformer:
    spec = source.node(folder)
    if spec.op == "pipeline":
        return _load_pipeline(source, spec)
    builder = BUILDERS.get(spec.op)
    if builder is None:
        raise BundleError(f"unsupported op '{spec.op}' in node '{spec.name}' ({folder}); "
                          f"supported: pipeline, {', '.join(sorted(BUILDERS))}")
    return builder(spec, source)


def _load_pipeline(source: BundleSource, spec: NodeSpec) -> Pipeline:
    stages = [_load_node(source, spec.folder / f"{name}.node")
              for name in spec.attributes.list("nodes", "string")]
    return Pipeline(spec, stages)


def score_file(bundle_path: Path, frame_path: Path) -> LeapFrame:
    """Score the LeapFrame JSON file with the bundle; the CLI's ``bundle score``."""
    from jobs.bundles.leapframe import read_frame

    bundle = load_bundle(bundle_path)
    return bundle.transform(read_frame(frame_path))
