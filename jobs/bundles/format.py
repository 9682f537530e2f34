"""The Bundle.ML layout in its JSON format, read and written without a JVM.

A bundle is ``bundle.json`` plus a ``root/`` folder holding the root node:
``model.json`` (the op and its attributes) and ``node.json`` (its name and the
columns bound to its ports). A pipeline lists its stages in the ``nodes``
attribute; each stage lives in a ``<name>.node/`` sub-folder. Tree ensembles
keep one sub-folder per tree (``tree0/``...) with a ``model.json`` and the
nodes in ``tree.json``, one JSON object per line in pre-order.

Attribute values follow MLeap's ``bundle-ml`` JSON support: scalars are
``{"double": x}``, ``{"long": n}``... (zero, false and empty values are left
out, so readers default them); lists are ``{"type": "list", "<base>": [...]}``;
tensors are ``{"type": "tensor", "<base>": [...], "shape": {"dimensions":
[{"size": n, "name": ""}]}}``; a list of tensors keeps each tensor without its
``type`` key under ``"tensor"``.
"""

from __future__ import annotations

import json
import logging
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# MLeap writes its own release as the bundle version; this project pins the
# mleap package to 0.25.x and writes the version installed. The reader does not
# check it, so older bundles (0.8.x in the shared fixtures) load too.
MLEAP_FALLBACK_VERSION = "0.25.3"
BUNDLE_FORMAT = "json"
SCALAR_KEYS = ("boolean", "int", "long", "float", "double", "string", "byte_string")
LIST_KEYS = ("boolean", "int", "long", "float", "double", "string", "byte_string", "tensor",
             "data_shape", "basic_type")
TENSOR_BASES = ("boolean", "byte", "short", "int", "long", "float", "double", "string")


def mleap_version() -> str:
    """The installed mleap package's version (what its serializers write), else 0.25.3."""
    try:
        return metadata.version("mleap")
    except metadata.PackageNotFoundError:
        return MLEAP_FALLBACK_VERSION


class BundleError(ValueError):
    """A bundle or LeapFrame cannot be read or scored; the message says what and where."""


# ---------------------------------------------------------------- attribute values


def double(value: float) -> dict[str, Any]:
    return {"double": float(value)} if value != 0 else {}


def long(value: int) -> dict[str, Any]:
    return {"long": int(value)} if value != 0 else {}


def int_(value: int) -> dict[str, Any]:
    return {"int": int(value)} if value != 0 else {}


def boolean(value: bool) -> dict[str, Any]:
    return {"boolean": True} if value else {}


def string(value: str) -> dict[str, Any]:
    return {"string": value} if value != "" else {}


def typed_list(base: str, values: Sequence[Any]) -> dict[str, Any]:
    """A list value; MLeap leaves the key out when the list is empty."""
    encoded: dict[str, Any] = {"type": "list"}
    if len(values) > 0:
        encoded[base] = [_plain(base, v) for v in values]
    return encoded


def tensor(values: Sequence[float] | np.ndarray, base: str = "double",
           dimensions: Sequence[int] | None = None) -> dict[str, Any]:
    """A tensor value (``Value.vector`` / ``Value.tensor`` in MLeap)."""
    return {"type": "tensor", **_tensor_body(values, base, dimensions)}


def tensor_list(tensors: Sequence[Sequence[float] | np.ndarray], base: str = "float"
                ) -> dict[str, Any]:
    """A list of 1-d tensors (``Value.tensorList``), as ALS writes its factors."""
    encoded: dict[str, Any] = {"type": "list"}
    if len(tensors) > 0:
        encoded["tensor"] = [_tensor_body(t, base, None) for t in tensors]
    return encoded


def data_shape_scalar(nullable: bool = True) -> dict[str, Any]:
    return {"base": "scalar", "isNullable": nullable}


def data_shape_tensor(size: int, nullable: bool = True) -> dict[str, Any]:
    return {"base": "tensor", "isNullable": nullable,
            "tensorShape": {"dimensions": [{"size": int(size), "name": ""}]}}


def _tensor_body(values: Sequence[Any] | np.ndarray, base: str,
                 dimensions: Sequence[int] | None) -> dict[str, Any]:
    array = np.asarray(values)
    dims = list(dimensions) if dimensions is not None else [int(array.size)]
    return {base: [_plain(base, v) for v in array.reshape(-1)],
            "shape": {"dimensions": [{"size": int(d), "name": ""} for d in dims]}}


def _plain(base: str, value: Any) -> Any:
    if base == "float":
        # The shortest text that reads back as the same 32-bit float, as the JVM prints it.
        return float(str(np.float32(value)))
    if base == "double":
        return float(value)
    if base in ("int", "long", "short", "byte"):
        return int(value)
    if base == "boolean":
        return bool(value)
    return value


@dataclass(frozen=True)
class Attributes:
    """The attributes of one ``model.json``, with typed getters that default missing keys."""

    values: Mapping[str, Any]
    where: str = ""

    def has(self, name: str) -> bool:
        return name in self.values

    def _raw(self, name: str) -> Mapping[str, Any] | None:
        raw = self.values.get(name)
        if raw is not None and not isinstance(raw, Mapping):
            raise BundleError(f"{self.where}: attribute '{name}' is not an attribute value")
        return raw

    def scalar(self, name: str, key: str, default: Any = None) -> Any:
        """The scalar under ``key`` (``double``, ``long``...), or MLeap's zero value."""
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise BundleError(f"{self.where}: attribute '{name}' is missing")
            return default
        if raw.get("type") in ("list", "tensor"):
            raise BundleError(f"{self.where}: attribute '{name}' is a {raw['type']}, "
                              f"expected a {key}")
        zero: dict[str, Any] = {"boolean": False, "int": 0, "long": 0, "float": 0.0,
                                "double": 0.0, "string": ""}
        return raw.get(key, zero.get(key))

    def double(self, name: str, default: float | None = None) -> float:
        return float(self.scalar(name, "double", default))

    def long(self, name: str, default: int | None = None) -> int:
        return int(self.scalar(name, "long", default))

    def int(self, name: str, default: int | None = None) -> int:
        return int(self.scalar(name, "int", default))

    def boolean(self, name: str, default: bool | None = None) -> bool:
        return bool(self.scalar(name, "boolean", default))

    def string(self, name: str, default: str | None = None) -> str:
        return str(self.scalar(name, "string", default))

    def list(self, name: str, key: str, default: list[Any] | None = None) -> list[Any]:
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise BundleError(f"{self.where}: attribute '{name}' is missing")
            return default
        if raw.get("type") != "list":
            raise BundleError(f"{self.where}: attribute '{name}' is not a list")
        return list(raw.get(key, []))

    def tensor(self, name: str, required: bool = True) -> np.ndarray | None:
        """A tensor as a float64 array shaped by its dimensions."""
        raw = self._raw(name)
        if raw is None:
            if required:
                raise BundleError(f"{self.where}: attribute '{name}' is missing")
            return None
        if raw.get("type") != "tensor":
            raise BundleError(f"{self.where}: attribute '{name}' is not a tensor")
        return _tensor_array(raw, f"{self.where}: attribute '{name}'")

    def tensor_list(self, name: str) -> list[np.ndarray]:
        raw = self._raw(name)
        if raw is None or raw.get("type") != "list":
            raise BundleError(f"{self.where}: attribute '{name}' is not a list of tensors")
        return [_tensor_array(t, f"{self.where}: attribute '{name}'")
                for t in raw.get("tensor", [])]


def _tensor_array(raw: Mapping[str, Any], where: str) -> np.ndarray:
    base = next((b for b in TENSOR_BASES if b in raw), None)
    if base is None:
        # An empty tensor has no values key at all.
        return np.zeros(0)
    dtype = np.float32 if base == "float" else (np.float64 if base == "double" else None)
    values = np.asarray(raw[base], dtype=dtype)
    dims = [int(d.get("size", 0)) for d in raw.get("shape", {}).get("dimensions", [])]
    if len(dims) > 1 and all(d > 0 for d in dims):
        if int(np.prod(dims)) != values.size:
            raise BundleError(f"{where}: tensor of {values.size} values does not fit "
                              f"its shape {dims}")
        values = values.reshape(dims)
    return values


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class NodeSpec:
    """One node as stored: its folder, name, op, attributes and port bindings."""

    folder: PurePosixPath
    name: str
    op: str
    attributes: Attributes
    inputs: dict[str, str]
    outputs: dict[str, str]


class BundleSource:
    """Files of a bundle, from a zip file or an unpacked directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise FileNotFoundError(f"no bundle at {path}")
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_dir():
            return
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{path} is not a bundle: neither a zip file nor a directory")
        self._zip = zipfile.ZipFile(path)
        names = self._zip.namelist()
        if "bundle.json" not in names:
            # Some tools zip the bundle's folder rather than its contents.
            nested = [n for n in names if n.endswith("/bundle.json") and n.count("/") == 1]
            if not nested:
                raise BundleError(f"{path} is not a bundle: it has no bundle.json")
            self._prefix = nested[0][: -len("bundle.json")]

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def exists(self, relative: PurePosixPath | str) -> bool:
        if self._zip is None:
            return (self.path / str(relative)).exists()
        name = self._prefix + str(relative)
        try:
            self._zip.getinfo(name)
            return True
        except KeyError:
            return False

    def read_text(self, relative: PurePosixPath | str) -> str:
        try:
            if self._zip is None:
                return (self.path / str(relative)).read_text(encoding="utf-8")
            return self._zip.read(self._prefix + str(relative)).decode("utf-8")
        except (KeyError, FileNotFoundError):
            raise BundleError(f"{self.path} is not a complete bundle: {relative} is missing"
                              ) from None

    def read_json(self, relative: PurePosixPath | str) -> Any:
        text = self.read_text(relative)
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise BundleError(f"{self.path}: {relative} is not valid JSON ({err.msg} at line "
                              f"{err.lineno})") from None

    def bundle_info(self) -> dict[str, Any]:
        info = self.read_json("bundle.json")
        if not isinstance(info, dict):
            raise BundleError(f"{self.path}: bundle.json is not a JSON object")
        if info.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
            raise BundleError(f"{self.path}: bundle format {info.get('format')!r} is not "
                              f"supported; only 'json' bundles can be read")
        return info

    def model(self, folder: PurePosixPath) -> tuple[str, Attributes]:
        model = self.read_json(folder / "model.json")
        if not isinstance(model, dict) or "op" not in model:
            raise BundleError(f"{self.path}: {folder / 'model.json'} has no op")
        attributes = model.get("attributes") or {}
        return str(model["op"]), Attributes(attributes, where=f"{folder} (op {model['op']})")

    def node(self, folder: PurePosixPath) -> NodeSpec:
        node = self.read_json(folder / "node.json")
        op, attributes = self.model(folder)
        shape = node.get("shape") or {}
        return NodeSpec(folder=folder, name=str(node.get("name", folder.name)), op=op,
                        attributes=attributes,
                        inputs={s["port"]: s["name"] for s in shape.get("inputs", [])},
                        outputs={s["port"]: s["name"] for s in shape.get("outputs", [])})

    def tree_lines(self, folder: PurePosixPath) -> Iterator[dict[str, Any]]:
        if not self.exists(folder / "tree.json"):
            raise BundleError(f"{self.path}: {folder}/tree.json is missing (protobuf trees "
                              f"cannot be read)")
        for number, line in enumerate(self.read_text(folder / "tree.json").splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise BundleError(f"{self.path}: {folder}/tree.json line {number} is not "
                                      f"JSON") from None


# ---------------------------------------------------------------- writing


@dataclass
class NodeFiles:
    """A node to write: its JSON files and any sub-folders (pipeline stages, trees)."""

    name: str
    op: str
    attributes: dict[str, Any]
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    children: list[tuple[str, NodeFiles | ModelFiles]] = field(default_factory=list)
    tree: list[dict[str, Any]] | None = None


@dataclass
class ModelFiles:
    """A model without a node (a tree of an ensemble): ``model.json`` and ``tree.json``."""

    op: str
    attributes: dict[str, Any]
    tree: list[dict[str, Any]] | None = None


def model_json(op: str, attributes: Mapping[str, Any]) -> str:
    # Compact: an ALS model's factor lists run to millions of numbers.
    return json.dumps({"op": op, "attributes": dict(attributes)}, separators=(",", ":"))


def node_json(name: str, inputs: Sequence[tuple[str, str]],
              outputs: Sequence[tuple[str, str]]) -> str:
    return json.dumps({"name": name, "shape": {
        "inputs": [{"name": column, "port": port} for port, column in inputs],
        "outputs": [{"name": column, "port": port} for port, column in outputs]}}, indent=2)


def tree_json(nodes: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(node, separators=(",", ":")) + "\n" for node in nodes)


def bundle_files(root: NodeFiles, timestamp: datetime | None = None,
                 bundle_uid: str | None = None) -> dict[str, str]:
    """Every file of a bundle, by its path inside the bundle."""
    when = timestamp or datetime.now(UTC)
    files = {"bundle.json": json.dumps({
        "uid": bundle_uid or str(uuid.uuid4()),
        "name": root.name,
        "format": BUNDLE_FORMAT,
        "version": mleap_version(),
        # MLeap writes a local date-time without zone, milliseconds precision.
        "timestamp": when.replace(tzinfo=None).isoformat(timespec="milliseconds"),
    }, indent=2)}
    _add_node(files, PurePosixPath("root"), root)
    return files


def _add_node(files: dict[str, str], folder: PurePosixPath, node: NodeFiles | ModelFiles
              ) -> None:
    files[str(folder / "model.json")] = model_json(node.op, node.attributes)
    if isinstance(node, NodeFiles):
        files[str(folder / "node.json")] = node_json(node.name, node.inputs, node.outputs)
        for child_folder, child in node.children:
            _add_node(files, folder / child_folder, child)
    if node.tree is not None:
        files[str(folder / "tree.json")] = tree_json(node.tree)


def write_zip(files: Mapping[str, str], path: Path) -> None:
    """Write the bundle as a zip with folder entries, as MLeap's BundleFile does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folders = sorted({str(p) + "/" for name in files for p in PurePosixPath(name).parents
                      if str(p) != "."})
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for folder in folders:
            archive.writestr(folder, b"")
        for name in sorted(files):
            archive.writestr(name, files[name])
    tmp.replace(path)
    logger.info("wrote bundle %s (%d files)", path, len(files))
