"""Kubernetes manifests to an epcsim scenario (``epcsim from-k8s``, ``docs/K8S.md``).

Pod, Deployment, ReplicaSet, ReplicationController, StatefulSet, Job and DaemonSet
objects (multi-document YAML, ``List`` objects too) become a scenario: each container
with an ``sgx.intel.com/epc`` resource (the EPC resource of the Intel device plugins for
Kubernetes) is a cgroup ``/kubepods/<namespace>/<pod>/<container>`` whose ``misc.max``
is that resource's limit, as the NRI ``sgx-epc`` plugin (containers/nri-plugins) writes
it, with one enclave in it.  The host's EPC comes from ``epc=`` or a Node's
``status.capacity["sgx.intel.com/epc"]``.  What cannot be mapped is returned in
:attr:`K8sConversion.unmapped` (and written as a comment block at the top of the TOML),
never dropped silently.

Usage::

    conv = from_k8s(["pods.yaml"], epc="64MiB", workloads={"web": "uniform"})
    write_scenario(conv, "pods.toml", inputs=["pods.yaml"])
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from ._atomic import atomic_write_text, same_file
from .errors import EpcsimError
from .scenario import load_scenario
from .scenario.limits import MAX_CGROUPS
from .units import format_size, parse_size, parse_time

__all__ = [
    "EPC_RESOURCE",
    "K8sConversion",
    "from_k8s",
    "parse_quantity",
    "parse_workload",
    "write_scenario",
]

#: the extended resource of the Intel device plugins for Kubernetes (EPC bytes)
EPC_RESOURCE = "sgx.intel.com/epc"
#: the NRI sgx-epc plugin's annotations: ``<key>/container.<name>``, ``<key>/pod``, ``<key>``
NRI_EPC_LIMIT_KEY = "epc-limit.nri.io"
#: the workload of every container of a pod (``<key>.<container>``: of one container)
WORKLOAD_ANNOTATION = "epcsim.io/workload"
#: every cgroup the conversion creates lies under this one
CGROUP_ROOT = "/kubepods"
DEFAULT_WORKLOAD = "zipf:0.9"
DEFAULT_DURATION = "1s"
PAGE_SIZE = 4096
#: a Kubernetes quantity above this is not an int64 (``Quantity.AsInt64`` fails)
_INT64_MAX = 2**63 - 1

#: workload kinds -> how many pods they run on this host
_WORKLOAD_KINDS = (
    "Pod",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "StatefulSet",
    "Job",
    "DaemonSet",
)
#: Kubernetes names: a DNS-1123 label (namespaces, containers) and subdomain (objects)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class K8sConversion:
    """The result of :func:`from_k8s`.

    ``toml`` is the scenario's text (it validates with ``epcsim validate``);
    ``unmapped`` lists what the manifests ask for that the scenario does not model and
    ``warnings`` what was mapped with a caveat, one line each (both also appear in
    ``toml``'s leading comment block).
    """

    toml: str
    unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- quantities -------------------------------------------------------------------------

_QTY = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)$", re.DOTALL)
_BINARY_SI = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SI: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")
_QTY_MAX_CHARS = 100


def parse_quantity(value: Any, *, what: str = "quantity") -> Fraction:
    """A Kubernetes ``resource.Quantity`` as an exact number (``ParseQuantity`` of
    k8s.io/apimachinery/pkg/api/resource): an optionally signed decimal number
    (``1``, ``1.5``, ``.5``, ``5.``) followed by a binary suffix (``Ki Mi Gi Ti Pi Ei``),
    a decimal one (``n u m k M G T P E``, or none) or a decimal exponent (``e3``,
    ``E-2``); no spaces.  ``"1Gi"`` is 2^30, ``"1G"`` 10^9, ``"1e9"`` 10^9, ``"1500m"``
    3/2.  A YAML integer is taken as it is; a YAML float as its decimal text.

    Raises:
        EpcsimError: naming *what* and the value, for anything Kubernetes refuses.
    """
    if isinstance(value, bool) or value is None:
        raise EpcsimError(f"{what}: expected a quantity such as 64Mi, got {_q(value)}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise EpcsimError(f"{what}: expected a quantity such as 64Mi, got {_q(value)}")
    if not text or len(text) > _QTY_MAX_CHARS:
        raise EpcsimError(f"{what}: not a Kubernetes quantity: {_q(text)}")
    m = _QTY.match(text)
    assert m is not None  # every group may be empty
    sign, whole, frac, suffix = m.group(1), m.group(2), m.group(3) or "", m.group(4)
    number = Fraction(int(whole or "0")) + (
        Fraction(int(frac), 10 ** len(frac)) if frac else Fraction(0)
    )
    if suffix in _BINARY_SI:
        scale: Fraction = Fraction(_BINARY_SI[suffix])
    elif suffix in _DECIMAL_SI:
        scale = _DECIMAL_SI[suffix]
    elif (e := _EXPONENT.match(suffix)) is not None:
        exponent = int(e.group(1))
        if abs(exponent) > 30:
            raise EpcsimError(f"{what}: exponent out of range in {_q(text)}")
        scale = Fraction(10) ** exponent
    else:
        raise EpcsimError(
            f"{what}: not a Kubernetes quantity: {_q(text)} (a number with an optional "
            "suffix Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent e9)"
        )
    out = number * scale
    return -out if sign == "-" else out


def _epc_bytes(value: Any, *, what: str) -> int:
    """An ``sgx.intel.com/epc`` quantity as bytes: an extended resource, so a
    non-negative integer (the API server's "must be an integer")."""
    q = parse_quantity(value, what=what)
    if q < 0:
        raise EpcsimError(f"{what}: must be greater than or equal to 0, got {_q(value)}")
    if q.denominator != 1:
        raise EpcsimError(
            f"{what}: must be an integer (extended resources are whole units, here bytes), "
            f"got {_q(value)}"
        )
    if q > _INT64_MAX:
        raise EpcsimError(f"{what}: {_q(value)} is more than 2^63-1 bytes")
    return int(q)


# --- workloads --------------------------------------------------------------------------


def _float(text: str, what: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise EpcsimError(f"{what}: {name} must be a number, got {_q(text)}") from None
    if not math.isfinite(v):
        raise EpcsimError(f"{what}: {name} must be a finite number, got {_q(text)}")
    return v


def parse_workload(spec: str, *, what: str = "workload") -> dict[str, Any]:
    """A workload as ``--workload`` and the ``epcsim.io/workload`` annotation give it:
    ``zipf[:ALPHA]`` (default 0.9), ``uniform``, ``sequential`` or
    ``hotcold[:HOT_FRACTION[:HOT_PROBABILITY]]`` (defaults 0.1 and 0.9), over the whole
    enclave.  Returns the scenario's workload table without its duration.

    Raises:
        EpcsimError: naming *what* and the value.
    """
    if not isinstance(spec, str):
        raise EpcsimError(f"{what}: expected a string such as zipf:0.9, got {_q(spec)}")
    name, *args = spec.strip().split(":")
    if name == "zipf":
        if len(args) > 1:
            raise EpcsimError(f"{what}: zipf takes one parameter (zipf:ALPHA), got {_q(spec)}")
        alpha = _float(args[0], what, "alpha") if args else 0.9
        if alpha <= 0:
            raise EpcsimError(f"{what}: alpha must be > 0, got {_q(spec)}")
        return {"pattern": "zipf", "alpha": alpha}
    if name in ("uniform", "sequential"):
        if args:
            raise EpcsimError(f"{what}: {name} takes no parameter, got {_q(spec)}")
        return {"pattern": name}
    if name == "hotcold":
        if len(args) > 2:
            raise EpcsimError(
                f"{what}: hotcold takes at most two parameters "
                f"(hotcold:HOT_FRACTION:HOT_PROBABILITY), got {_q(spec)}"
            )
        hf = _float(args[0], what, "hot_fraction") if args else 0.1
        hp = _float(args[1], what, "hot_probability") if len(args) > 1 else 0.9
        if not 0 < hf <= 1:
            raise EpcsimError(f"{what}: hot_fraction must be in (0, 1], got {_q(spec)}")
        if not 0 <= hp <= 1:
            raise EpcsimError(f"{what}: hot_probability must be in [0, 1], got {_q(spec)}")
        return {"pattern": "hotcold", "hot_fraction": hf, "hot_probability": hp}
    raise EpcsimError(
        f"{what}: unknown workload {_q(spec)} (zipf[:ALPHA], uniform, sequential, "
        "hotcold[:HOT_FRACTION[:HOT_PROBABILITY]])"
    )


# --- enclave manifests (Gramine, Occlum) ------------------------------------------------


@dataclass(frozen=True)
class _EnclaveManifest:
    path: str
    #: enclave bytes (whole pages), or None: take the container's limit
    size: int | None
    build: str
    what: str


def _gramine_size(value: Any, what: str) -> int:
    """``sgx.enclave_size`` as Gramine's signer reads it (``parse_size`` of
    python/graminelibos/sgx_sign.py): a string, an optional suffix K, M or G (1024
    multiples, upper case), the rest an integer as Python's ``int(x, 0)`` reads it."""
    if not isinstance(value, str):
        raise EpcsimError(f'{what}: expected a string such as "512M", got {_q(value)}')
    scale, text = 1, value
    for suffix, mult in (("K", 2**10), ("M", 2**20), ("G", 2**30)):
        if value.endswith(suffix):
            scale, text = mult, value[:-1]
            break
    try:
        n = int(text, 0) * scale
    except ValueError:
        raise EpcsimError(
            f"{what}: not a Gramine size: {_q(value)} (a number with K, M or G, e.g. 512M)"
        ) from None
    if n < 8192 or n & (n - 1):
        raise EpcsimError(
            f"{what}: {_q(value)} is not a power of two of at least 8192 bytes (ECREATE "
            "refuses any other enclave size, SECS.SIZE)"
        )
    return n


def _occlum_size(value: Any, what: str) -> int:
    """An Occlum.json size as Occlum reads it (``parse_memory_size`` of
    tools/gen_internal_conf): a whole number followed by KB, MB, GB, TB (1024
    multiples) or B."""
    if not isinstance(value, str):
        raise EpcsimError(f'{what}: expected a string such as "256MB", got {_q(value)}')
    m = re.fullmatch(r"\s*\+?([0-9]+)\s*(KB|MB|GB|TB|B)\s*", value)
    if m is None:
        raise EpcsimError(
            f"{what}: not an Occlum size: {_q(value)} (a whole number with KB, MB, GB, TB or B)"
        )
    unit = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "B": 1}[m.group(2)]
    n = int(m.group(1)) * unit
    if n <= 0:
        raise EpcsimError(f"{what}: must be positive, got {_q(value)}")
    return n


def _read_text(path: str, kind: str) -> str:
    p = Path(path)
    if not p.exists():
        raise EpcsimError(f"{path}: no such file")
    if p.is_dir():
        raise EpcsimError(f"{path}: is a directory, not {kind}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise EpcsimError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise EpcsimError(
            f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} (line {line})"
        ) from None
    return text.removeprefix("\ufeff")


def _read_enclave_manifest(path: str) -> tuple[_EnclaveManifest, list[str]]:
    """A Gramine manifest (TOML: ``sgx.enclave_size``, ``sgx.edmm_enable``) or, for a
    ``.json`` file, an Occlum.json (``resource_limits.user_space_size``)."""
    notes: list[str] = []
    text = _read_text(path, "an enclave manifest")
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EpcsimError(
                f"{path}: line {e.lineno}, column {e.colno}: not valid JSON (Occlum.json): {e.msg}"
            ) from None
        except RecursionError:
            raise EpcsimError(f"{path}: not valid JSON (Occlum.json): nested too deeply") from None
        limits = data.get("resource_limits") if isinstance(data, dict) else None
        if not isinstance(limits, dict) or "user_space_size" not in limits:
            raise EpcsimError(
                f"{path}: resource_limits.user_space_size: required in an Occlum.json"
            )
        feature = data.get("feature", {})
        edmm = feature.get("enable_edmm", False) if isinstance(feature, dict) else False
        if not isinstance(edmm, bool):
            raise EpcsimError(
                f"{path}: feature.enable_edmm: expected true or false, got {_q(edmm)}"
            )
        size = _occlum_size(limits["user_space_size"], f"{path}: resource_limits.user_space_size")
        if not edmm and limits.get("user_space_max_size") is not None:
            # without EDMM Occlum reserves (EADDs) the maximum (gen_internal_conf)
            size = _occlum_size(
                limits["user_space_max_size"], f"{path}: resource_limits.user_space_max_size"
            )
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        return _EnclaveManifest(path, size, "eadd", f"Occlum user space of {path}"), notes
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        hint = " (render a .manifest.template with gramine-manifest first)" if "{" in text else ""
        raise EpcsimError(f"{path}: not valid TOML (Gramine manifest): {e}{hint}") from None
    except RecursionError:
        raise EpcsimError(f"{path}: not valid TOML (Gramine manifest): nested too deeply") from None
    sgx = data.get("sgx", {})
    if not isinstance(sgx, dict):
        raise EpcsimError(f"{path}: sgx: expected a table, got {_q(sgx)}")
    edmm = sgx.get("edmm_enable", False)
    if not isinstance(edmm, bool):
        raise EpcsimError(f"{path}: sgx.edmm_enable: expected true or false, got {_q(edmm)}")
    build = "eaug" if edmm else "eadd"
    if "enclave_size" not in sgx:
        if edmm:
            notes.append(
                f"{path}: no sgx.enclave_size with sgx.edmm_enable: Gramine's default is "
                "1024G of address space with pages added on demand; the enclave is sized "
                "at its container's limit"
            )
            return _EnclaveManifest(path, None, build, f"the limit ({path}: EDMM)"), notes
        size = _gramine_size("256M", f"{path}: sgx.enclave_size")  # Gramine's default
        return (
            _EnclaveManifest(path, size, build, f"Gramine's default sgx.enclave_size ({path})"),
            notes,
        )
    size = _gramine_size(sgx["enclave_size"], f"{path}: sgx.enclave_size")
    return _EnclaveManifest(path, size, build, f"sgx.enclave_size of {path}"), notes


# --- reading YAML -----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (what ``yaml.safe_load_all`` uses) that refuses duplicate
    mapping keys, as kubectl's YAML decoder does: a later key would silently replace
    the earlier one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error below
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {_q(key)} (first at line {first}; Kubernetes "
                        "refuses duplicate keys)",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class _Doc:
    file: str
    fileno: int
    index: int
    line: int
    data: Any

    def where(self, item: int | None = None) -> str:
        at = f"{self.file}: document {self.index} (line {self.line})"
        return at if item is None else f"{at}, items[{item}]"


def _read_yaml(path: str, fileno: int = 0) -> list[_Doc]:
    """The documents of a multi-document YAML file, with their first lines."""
    text = _read_text(path, "a YAML file")
    docs: list[_Doc] = []
    loader = None
    try:
        loader = _Loader(text)  # checks the characters first (ReaderError)
        while loader.check_node():
            node = loader.get_node()
            value = loader.construct_document(node)
            docs.append(_Doc(path, fileno, len(docs) + 1, node.start_mark.line + 1, value))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}: line {mark.line + 1}, column {mark.column + 1}" if mark else path
        if isinstance(e, yaml.constructor.ConstructorError):
            raise EpcsimError(f"{where}: {e.problem}") from None
        context = f" ({e.context})" if e.context else ""
        raise EpcsimError(f"{where}: not valid YAML: {e.problem}{context}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise EpcsimError(
            f"{path}: line {line}: not valid YAML: character #x{e.character:04x}: {e.reason}"
        ) from None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error is one of the above
        raise EpcsimError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise EpcsimError(f"{path}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


# --- the objects ------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A quantity from the user's files as written, quoted (:func:`_q`) unless plain."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9.+_-]+", value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _q(value)


def _q(value: Any) -> str:
    """A value from the user's files, quoted on one line (JSON, ASCII)."""
    try:
        return json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        return json.dumps(repr(value), ensure_ascii=True)


#: what was not mapped, each with the place of its object in the input (sorted by it)
_Notes = list[tuple[tuple[int, int, int], str]]


class _Obj:
    """One Kubernetes object of a document, with the helpers that name its fields."""

    def __init__(self, doc: _Doc, data: dict, item: int | None) -> None:
        self.doc = doc
        self.data = data
        self.item = item
        #: where it is in the input: unmapped items are listed in this order
        self.order = (doc.fileno, doc.index, -1 if item is None else item)
        self.kind: str = ""
        self.namespace = "default"
        self.name = ""

    def where(self) -> str:
        w = self.doc.where(self.item)
        if self.kind:
            ident = f"{self.namespace}/{self.name}" if self.kind != "Node" else self.name
            w = (
                f"{w[:-1]}, {self.kind} {ident})"
                if w.endswith(")")
                else f"{w} ({self.kind} {ident})"
            )
        return w

    def fail(self, fld: str, msg: str) -> EpcsimError:
        return EpcsimError(f"{self.where()}: {fld}: {msg}" if fld else f"{self.where()}: {msg}")

    def mapping(self, value: Any, fld: str, *, required: bool = False) -> dict:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(fld, f"expected a mapping, got {_q(value)}")
        return value

    def string(self, value: Any, fld: str) -> str:
        if not isinstance(value, str):
            raise self.fail(fld, f"expected a string, got {_q(value)}")
        return value

    def count(self, value: Any, fld: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(fld, f"expected a whole number >= 0, got {_q(value)}")
        return value


@dataclass
class _Container:
    obj: _Obj
    pod: str  # the pod's name (replica name for a workload)
    replica: str  # "" for a Pod, else "replica I of N"
    name: str
    index: int
    fld: str  # the container's field path
    epc: int  # the sgx.intel.com/epc bytes (limit, else request)
    epc_text: str
    misc_max: int | None  # what the NRI plugin writes (None: no limit)
    misc_source: str
    workload: dict[str, Any] = field(default_factory=dict)
    workload_source: str = ""

    @property
    def ident(self) -> str:
        return f"{self.obj.namespace}/{self.pod}/{self.name}"


def _objects(docs: list[_Doc], unmapped: _Notes) -> list[_Obj]:
    out: list[_Obj] = []
    for doc in docs:
        if doc.data is None:  # an empty document ("---" alone)
            continue
        items: list[tuple[Any, int | None]] = [(doc.data, None)]
        kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc.data:
            its = doc.data["items"] or []
            if not isinstance(its, list):
                raise EpcsimError(f"{doc.where()}: items: expected a list, got {_q(its)}")
            items = list(zip(its, range(len(its)), strict=True))
        for data, item in items:
            if not isinstance(data, dict):
                got = type(data).__name__
                got = {"list": "a list", "str": "a string", "int": "a number"}.get(got, got)
                raise EpcsimError(
                    f"{doc.where(item)}: a Kubernetes object is a mapping (apiVersion, kind, "
                    f"metadata, ...), got {got}"
                )
            obj = _Obj(doc, data, item)
            kind = data.get("kind")
            if not isinstance(kind, str) or not kind:
                raise obj.fail(
                    "kind", f"required (a Kubernetes object names its kind), got {_q(kind)}"
                )
            meta = obj.mapping(data.get("metadata"), "metadata")
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                hint = (
                    " (generateName is not supported: give a name)"
                    if "generateName" in meta
                    else ""
                )
                raise obj.fail("metadata.name", f"required, got {_q(name)}{hint}")
            obj.kind, obj.name = kind, name
            if kind != "Node":
                ns = meta.get("namespace", "default")
                if not isinstance(ns, str) or not _DNS_LABEL.fullmatch(ns) or len(ns) > 63:
                    raise obj.fail("metadata.namespace", f"not a namespace name: {_q(ns)}")
                obj.namespace = ns
            if kind in _WORKLOAD_KINDS and (not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253):
                raise obj.fail(
                    "metadata.name",
                    f"not a Kubernetes object name (lower-case letters, digits, '-' and '.'): "
                    f"{_q(name)}",
                )
            if kind not in (*_WORKLOAD_KINDS, "Node"):
                why = {
                    "CronJob": "its Jobs run on a schedule (convert one of them as a Job)",
                    "Service": "not a workload",
                    "ConfigMap": "not a workload",
                    "Secret": "not a workload",
                    "Namespace": "a namespace is created for the pods that name it",
                }.get(kind, "not a workload epcsim maps")
                unmapped.append((obj.order, f"{obj.where()}: kind {kind}: {why}"))
                continue
            out.append(obj)
    return out


def _pods(obj: _Obj, unmapped: _Notes) -> tuple[list[tuple[str, str]], dict, dict, str]:
    """(pod names and replica notes, pod metadata, pod spec, spec's field path)."""
    data = obj.data
    if obj.kind == "Pod":
        meta = obj.mapping(data.get("metadata"), "metadata")
        spec = obj.mapping(data.get("spec"), "spec", required=True)
        return [(obj.name, "")], meta, spec, "spec"
    spec = obj.mapping(data.get("spec"), "spec", required=True)
    template = obj.mapping(spec.get("template"), "spec.template", required=True)
    meta = obj.mapping(template.get("metadata"), "spec.template.metadata")
    pod_spec = obj.mapping(template.get("spec"), "spec.template.spec", required=True)
    if obj.kind == "DaemonSet":
        n = 1
    elif obj.kind == "Job":
        n = obj.count(spec.get("parallelism"), "spec.parallelism", 1)
        completions = spec.get("completions")
        if completions is not None:
            c = obj.count(completions, "spec.completions", 1)
            if c > n:
                unmapped.append(
                    (
                        obj.order,
                        f"{obj.where()}: spec.completions {c} with spec.parallelism {n}: the "
                        f"{n} pods running at once are simulated, not the {c - n} that would "
                        "follow",
                    )
                )
            n = min(n, c)
    else:
        n = obj.count(spec.get("replicas"), "spec.replicas", 1)
    if n > MAX_CGROUPS:
        fld = {"Job": "spec.parallelism"}.get(obj.kind, "spec.replicas")
        raise obj.fail(fld, f"{n} pods: a scenario holds at most {MAX_CGROUPS} cgroups")
    if n == 0:
        unmapped.append((obj.order, f"{obj.where()}: no pod (0 replicas)"))
    pods = [(f"{obj.name}-{i}", f"replica {i} of {n}") for i in range(n)]
    return pods, meta, pod_spec, "spec.template.spec"


def _annotations(obj: _Obj, meta: dict, fld: str) -> dict[str, str]:
    ann = obj.mapping(meta.get("annotations"), f"{fld}.annotations")
    for k, v in ann.items():
        if not isinstance(v, str):
            raise obj.fail(f"{fld}.annotations[{k}]", f"an annotation is a string, got {_q(v)}")
    return ann


def _containers(
    obj: _Obj, unmapped: _Notes, warnings: list[str], duration: str
) -> tuple[list[_Container], list[tuple[str, str]]]:
    """The EPC containers of every pod of *obj*, and every container (ident, reason)
    that has none (for the selectors' messages)."""
    pods, meta, spec, sfld = _pods(obj, unmapped)
    mfld = "metadata" if obj.kind == "Pod" else "spec.template.metadata"
    ann = _annotations(obj, meta, mfld)
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise obj.fail(f"{sfld}.containers", f"expected a non-empty list, got {_q(containers)}")
    names: set[str] = set()
    for key in ("initContainers", "ephemeralContainers"):
        lst = spec.get(key) or []
        if not isinstance(lst, list):
            raise obj.fail(f"{sfld}.{key}", f"expected a list, got {_q(lst)}")
        for i, c in enumerate(lst):
            c = obj.mapping(c, f"{sfld}.{key}[{i}]", required=True)
            cname = obj.string(c.get("name"), f"{sfld}.{key}[{i}].name")
            names.add(cname)
            res = obj.mapping(c.get("resources"), f"{sfld}.{key}[{i}].resources")
            lim = obj.mapping(res.get("limits"), f"{sfld}.{key}[{i}].resources.limits")
            epc = (
                f" (its {EPC_RESOURCE} limit {_show(lim[EPC_RESOURCE])} is not simulated)"
                if EPC_RESOURCE in lim
                else ""
            )
            if key == "ephemeralContainers":
                why = "an ephemeral (debugging) container"
            elif c.get("restartPolicy") == "Always":
                why = "a sidecar init container (restartPolicy Always, beside the containers)"
            else:
                why = "an init container (runs to completion before the containers start)"
            unmapped.append(
                (obj.order, f"{obj.where()}: {sfld}.{key}[{i}] {cname}: {why}: not mapped{epc}")
            )
    if "resources" in spec:
        unmapped.append(
            (obj.order, f"{obj.where()}: {sfld}.resources: pod-level resources are not mapped")
        )
    out: list[_Container] = []
    others: list[tuple[str, str]] = []
    specs: list[tuple[Any, ...]] = []
    for i, c in enumerate(containers):
        cf = f"{sfld}.containers[{i}]"
        c = obj.mapping(c, cf, required=True)
        cname = obj.string(c.get("name"), f"{cf}.name")
        if not _DNS_LABEL.fullmatch(cname) or len(cname) > 63:
            raise obj.fail(f"{cf}.name", f"not a container name (a DNS-1123 label): {_q(cname)}")
        if cname in names:
            raise obj.fail(f"{cf}.name", f"duplicate container name {_q(cname)} in the pod")
        names.add(cname)
        res = obj.mapping(c.get("resources"), f"{cf}.resources")
        limits = obj.mapping(res.get("limits"), f"{cf}.resources.limits")
        requests = obj.mapping(res.get("requests"), f"{cf}.resources.requests")
        other = sorted(k for k in limits if k != EPC_RESOURCE)
        if other:
            text = ", ".join(f"{k}={_show(limits[k])}" for k in other)
            unmapped.append(
                (
                    obj.order,
                    f"{obj.where()}: {cf} {cname}: limits {text}: not modelled (the scenario "
                    f"has EPC only; CPU and memory limits do not apply)",
                )
            )
        lim_f, req_f = (
            f"{cf}.resources.limits[{EPC_RESOURCE}]",
            f"{cf}.resources.requests[{EPC_RESOURCE}]",
        )
        lim = (
            _epc_bytes(limits[EPC_RESOURCE], what=f"{obj.where()}: {lim_f}")
            if EPC_RESOURCE in limits
            else None
        )
        req = (
            _epc_bytes(requests[EPC_RESOURCE], what=f"{obj.where()}: {req_f}")
            if EPC_RESOURCE in requests
            else None
        )
        if lim is None and req is None:
            unmapped.append(
                (obj.order, f"{obj.where()}: {cf} {cname}: no {EPC_RESOURCE}: no enclave")
            )
            for pod, _ in pods:
                others.append((f"{obj.namespace}/{pod}/{cname}", f"has no {EPC_RESOURCE}"))
            continue
        if lim is None:
            assert req is not None
            warnings.append(
                f"{obj.where()}: {req_f} {_show(requests[EPC_RESOURCE])} without a limit: "
                'Kubernetes refuses it ("Limit must be set for non overcommitable '
                'resources"); the request is used as the limit'
            )
            epc, epc_text = req, f"request {_show(requests[EPC_RESOURCE])} (no limit)"
        else:
            if req is not None and req != lim:
                warnings.append(
                    f"{obj.where()}: {req_f} {_show(requests[EPC_RESOURCE])} differs from the "
                    f"limit {_show(limits[EPC_RESOURCE])}: Kubernetes refuses it (extended "
                    "resources cannot be overcommitted); the limit is used"
                )
            epc, epc_text = lim, f"limit {_show(limits[EPC_RESOURCE])}"
        if epc == 0:
            unmapped.append(
                (obj.order, f"{obj.where()}: {cf} {cname}: {EPC_RESOURCE} is 0: no enclave")
            )
            for pod, _ in pods:
                others.append((f"{obj.namespace}/{pod}/{cname}", f"has {EPC_RESOURCE} 0"))
            continue
        misc_max: int | None = epc
        misc_source = f"{EPC_RESOURCE} {epc_text}"
        for key in (
            f"{NRI_EPC_LIMIT_KEY}/container.{cname}",
            f"{NRI_EPC_LIMIT_KEY}/pod",
            NRI_EPC_LIMIT_KEY,
        ):
            if key in ann:
                v = ann[key]
                if not re.fullmatch(r"[0-9]+", v) or int(v) > 2**64 - 1:
                    raise obj.fail(
                        f"{mfld}.annotations[{key}]",
                        f"the NRI sgx-epc plugin reads a number of bytes (base 10), got {_q(v)}",
                    )
                misc_max = int(v) or None  # the plugin writes no limit for 0
                misc_source = f"annotation {key}"
                if misc_max is None:
                    warnings.append(
                        f"{obj.where()}: {mfld}.annotations[{key}] is 0: the NRI sgx-epc "
                        f"plugin sets no misc.max for {cname}, which runs unlimited"
                    )
                elif misc_max != epc:
                    warnings.append(
                        f"{obj.where()}: {mfld}.annotations[{key}] {v} differs from "
                        f"{cname}'s {EPC_RESOURCE} ({epc}): misc.max is the annotation's, as "
                        "the NRI sgx-epc plugin writes it"
                    )
                break
        wkey = next(
            (k for k in (f"{WORKLOAD_ANNOTATION}.{cname}", WORKLOAD_ANNOTATION) if k in ann), None
        )
        if wkey is not None:
            wl = parse_workload(ann[wkey], what=f"{obj.where()}: {mfld}.annotations[{wkey}]")
            wsrc = f"annotation {wkey}"
        else:
            wl, wsrc = parse_workload(DEFAULT_WORKLOAD), "default"
        specs.append((cname, i, cf, epc, epc_text, misc_max, misc_source, wl, wsrc))
    for pod, replica in pods:  # pod by pod, each pod's containers in their order
        for cname, i, cf, epc, epc_text, misc_max, misc_source, wl, wsrc in specs:
            ct = _Container(obj, pod, replica, cname, i, cf, epc, epc_text, misc_max, misc_source)
            ct.workload, ct.workload_source = {**wl, "duration": duration}, wsrc
            out.append(ct)
    return out, others


# --- selectors (--manifest, --workload) ---------------------------------------------------


def _select(
    option: str,
    selector: str,
    containers: list[_Container],
    others: list[tuple[str, str]],
) -> list[_Container]:
    """The containers ``CONTAINER``, ``POD/CONTAINER`` or ``NAMESPACE/POD/CONTAINER``
    names; POD is a Pod's name, a workload's name (all its replicas) or one replica's."""
    parts = selector.split("/")
    if len(parts) > 3 or not all(parts):
        raise EpcsimError(
            f"{option} {selector}: name a container as CONTAINER, POD/CONTAINER or "
            "NAMESPACE/POD/CONTAINER"
        )

    def match(ns: str, names: tuple[str, ...], c: str) -> bool:
        if c != parts[-1]:
            return False
        if len(parts) >= 2 and parts[-2] not in names:
            return False
        return len(parts) < 3 or parts[0] == ns

    hits = [c for c in containers if match(c.obj.namespace, (c.obj.name, c.pod), c.name)]
    if not hits:
        bare = [
            (ident, why)
            for ident, why in others
            if match(ident.split("/")[0], (ident.split("/")[1],), ident.split("/")[2])
        ]
        if bare:
            raise EpcsimError(f"{option} {selector}: {bare[0][0]} {bare[0][1]}: it runs no enclave")
        known = sorted({f"{c.obj.namespace}/{c.obj.name}/{c.name}" for c in containers})
        raise EpcsimError(
            f"{option} {selector}: no container with {EPC_RESOURCE} matches (containers: "
            f"{', '.join(known)})"
        )
    groups = sorted({f"{c.obj.namespace}/{c.obj.name}/{c.name}" for c in hits})
    pods = {(c.obj.namespace, c.obj.name) for c in hits}
    if len(pods) > 1:
        raise EpcsimError(
            f"{option} {selector}: ambiguous, it names {', '.join(groups)}; give "
            "POD/CONTAINER or NAMESPACE/POD/CONTAINER"
        )
    return hits


def _assign(
    option: str,
    mapping: Mapping[str, Any] | None,
    containers: list[_Container],
    others: list[tuple[str, str]],
) -> dict[int, tuple[str, Any]]:
    """id(container) -> (selector, value) for each entry of *mapping*."""
    out: dict[int, tuple[str, Any]] = {}
    for selector, value in (mapping or {}).items():
        if not isinstance(selector, str):
            raise EpcsimError(f"{option}: a container name is a string, got {_q(selector)}")
        for c in _select(option, selector, containers, others):
            if id(c) in out:
                raise EpcsimError(f"{option}: both {out[id(c)][0]} and {selector} name {c.ident}")
            out[id(c)] = (selector, value)
    return out


# --- the host -----------------------------------------------------------------------------


def _host(
    objs: list[_Obj], epc: int | str | None, warnings: list[str], unmapped: _Notes
) -> tuple[int, int | None, str]:
    """(EPC bytes, CPUs or None, where the EPC came from)."""
    nodes: list[tuple[_Obj, int | None, int | None]] = []
    for obj in objs:
        if obj.kind != "Node":
            continue
        status = obj.mapping(obj.data.get("status"), "status")
        node_epc = None
        for key in ("capacity", "allocatable"):
            res = obj.mapping(status.get(key), f"status.{key}")
            if EPC_RESOURCE in res:
                node_epc = _epc_bytes(
                    res[EPC_RESOURCE], what=f"{obj.where()}: status.{key}[{EPC_RESOURCE}]"
                )
                break
        cpus = None
        cap = obj.mapping(status.get("capacity"), "status.capacity")
        if "cpu" in cap:
            q = parse_quantity(cap["cpu"], what=f"{obj.where()}: status.capacity[cpu]")
            cpus = max(1, min(4096, math.floor(q)))
        if node_epc is None:
            unmapped.append(
                (obj.order, f"{obj.where()}: no status.capacity[{EPC_RESOURCE}]: no EPC from it")
            )
        nodes.append((obj, node_epc, cpus))
    with_epc = [(o, e) for o, e, _ in nodes if e is not None]
    cpu_values = sorted({c for _, _, c in nodes if c is not None})
    cpus = cpu_values[0] if len(cpu_values) == 1 else None
    if len(cpu_values) > 1:
        warnings.append(
            "the Nodes differ in status.capacity[cpu]: host.cpus is left at its default"
        )
    if epc is not None:
        what = "epc"
        try:
            n = parse_size(epc, what=what)
        except EpcsimError:
            q = None
            if isinstance(epc, str) and epc.strip()[-2:] in _BINARY_SI:
                q = parse_quantity(epc.strip(), what=what)
            if q is None or q.denominator != 1 or q < 0:
                raise EpcsimError(
                    f"epc: not a size: {_q(epc)} (examples: 64GiB, 64Gi, 98566144)"
                ) from None
            n = int(q)
        if n <= 0 or n % PAGE_SIZE:
            raise EpcsimError(f"epc: must be a positive multiple of 4096 bytes, got {_q(epc)}")
        for o, e in with_epc:
            if e != n:
                warnings.append(
                    f"{o.where()}: its {EPC_RESOURCE} {e} is not the host's EPC: the given "
                    f"epc {format_size(n)} is used"
                )
        return n, cpus, "the epc given"
    if not with_epc:
        raise EpcsimError(
            f"no EPC size: give --epc (e.g. --epc 64GiB) or a Node with "
            f'status.capacity["{EPC_RESOURCE}"] in the YAML'
        )
    values = sorted({e for _, e in with_epc})
    if len(values) > 1:
        raise EpcsimError(
            "the Nodes have different EPC sizes ("
            + ", ".join(f"{o.name}: {e}" for o, e in with_epc)
            + "): the scenario is one host; choose its EPC with --epc"
        )
    obj, n = with_epc[0]
    if n % PAGE_SIZE:
        warnings.append(
            f"{obj.where()}: {EPC_RESOURCE} {n} is not a whole number of 4096-byte pages: "
            f"the EPC is rounded down to {n // PAGE_SIZE * PAGE_SIZE}"
        )
        n = n // PAGE_SIZE * PAGE_SIZE
    if n <= 0:
        raise obj.fail(f"status.capacity[{EPC_RESOURCE}]", "less than one 4096-byte page of EPC")
    return n, cpus, f"Node {obj.name}"


# --- TOML output ------------------------------------------------------------------------


def _clean(s: str) -> str:
    """*s* without control characters (a TOML comment allows none but tab) and without
    lone surrogates (not UTF-8)."""
    out = []
    for ch in s:
        o = ord(ch)
        if (o < 0x20 and ch != "\t") or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _toml_str(s: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {v!r}")  # pragma: no cover - internal


def _comment(text: str) -> str:
    return "# " + _clean(text) if text else "#"


# --- the conversion -----------------------------------------------------------------------


def _paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    out = [os.fspath(p) for p in value]
    if not out:
        raise EpcsimError("from-k8s: give at least one YAML file")
    return out


def from_k8s(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    epc: int | str | None = None,
    manifests: Mapping[str, str | os.PathLike[str]] | None = None,
    workloads: Mapping[str, str] | None = None,
    duration: str = DEFAULT_DURATION,
) -> K8sConversion:
    """Convert Kubernetes manifests (YAML files) into an epcsim scenario.

    Args:
        paths: the YAML files, read in order (multi-document; ``List`` objects too).
        epc: the host's EPC (an epcsim size, ``"64GiB"``, or a Kubernetes binary
            quantity, ``"64Gi"``); default: a Node's ``sgx.intel.com/epc`` capacity.
        manifests: CONTAINER -> a Gramine manifest (TOML, ``sgx.enclave_size``) or an
            Occlum.json (``resource_limits.user_space_size``) giving the enclave's size;
            CONTAINER is ``NAME``, ``POD/NAME`` or ``NAMESPACE/POD/NAME``.
        workloads: CONTAINER -> a workload (:func:`parse_workload`), over the
            ``epcsim.io/workload`` annotations and the default ``zipf:0.9``.
        duration: how long each enclave's workload runs (virtual time).

    Returns:
        the scenario's TOML text, with what was not mapped and the warnings.

    Raises:
        EpcsimError: for bad input, naming the file, the document and the field.
    """
    inputs = _paths(paths)
    if parse_time(duration, what="duration") <= 0:
        raise EpcsimError(f"duration: must be > 0, got {_q(duration)}")
    notes: _Notes = []
    warnings: list[str] = []
    docs = [d for k, p in enumerate(inputs) for d in _read_yaml(p, k)]
    objs = _objects(docs, notes)
    seen: dict[tuple[str, str, str], _Obj] = {}
    for obj in objs:
        key = (obj.kind, obj.namespace if obj.kind != "Node" else "", obj.name)
        if key in seen:
            raise obj.fail(
                "metadata.name",
                f"a second {obj.kind} of that name (the first: {seen[key].where()})",
            )
        seen[key] = obj
    containers: list[_Container] = []
    others: list[tuple[str, str]] = []
    for obj in objs:
        if obj.kind != "Node":
            cs, os_ = _containers(obj, notes, warnings, duration)
            containers += cs
            others += os_
    capacity, cpus, epc_source = _host(objs, epc, warnings, notes)
    unmapped = [text for _, text in sorted(notes, key=lambda n: n[0])]
    pods_seen: dict[tuple[str, str], _Obj] = {}
    for c in containers:
        key = (c.obj.namespace, c.pod)
        first = pods_seen.setdefault(key, c.obj)
        if first is not c.obj:
            raise c.obj.fail(
                "metadata.name",
                f"its pod {c.obj.namespace}/{c.pod} has the name of a pod of {first.where()}",
            )
    if not containers:
        raise EpcsimError(
            f"no container has an {EPC_RESOURCE} limit or request in "
            f"{', '.join(inputs)}: nothing to simulate"
        )
    # the enclave manifests
    man_by: dict[int, tuple[str, Any]] = _assign("--manifest", manifests, containers, others)
    read: dict[str, _EnclaveManifest] = {}
    for c in containers:  # in the containers' order: the notes are deterministic
        if id(c) not in man_by:
            continue
        path = os.fspath(man_by[id(c)][1])
        if path not in read:
            read[path], manifest_notes = _read_enclave_manifest(path)
            warnings += manifest_notes
    wl_by = _assign("--workload", workloads, containers, others)
    for c in containers:
        if id(c) not in wl_by:
            continue
        sel, spec = wl_by[id(c)]
        c.workload = {**parse_workload(spec, what=f"--workload {sel}={spec}"), "duration": duration}
        c.workload_source = f"--workload {sel}"
    total = sum(c.epc for c in containers)
    if total > capacity:
        warnings.append(
            f"the containers' {EPC_RESOURCE} add up to {total} bytes, more than the "
            f"{capacity}-byte EPC: a node's scheduler would leave pods Pending (extended "
            "resources are not overcommitted); here they all run on one host"
        )
    # the enclaves' sizes (their warnings belong in the header)
    sizes: list[tuple[int, str, str]] = []
    for c in containers:
        man = man_by.get(id(c))
        build, size, size_src = "eadd", None, f"{EPC_RESOURCE} {c.epc_text}"
        if man is not None:
            m = read[os.fspath(man[1])]
            build, size, size_src = m.build, m.size, m.what
        if size is None:
            size = max(PAGE_SIZE, c.epc // PAGE_SIZE * PAGE_SIZE)
            if c.epc < PAGE_SIZE:
                warnings.append(
                    f"{c.ident}: {EPC_RESOURCE} {c.epc} is less than one page: its enclave "
                    "cannot get its SECS page (ECREATE fails in the run)"
                )
            elif c.epc % PAGE_SIZE:
                size_src += ", rounded down to whole pages"
        elif c.misc_max is not None and size > c.misc_max:
            warnings.append(
                f"{c.ident}: the enclave ({format_size(size)}, {size_src}) is larger than "
                f"its misc.max ({format_size(c.misc_max)}): it reclaims its own pages"
            )
        sizes.append((size, size_src, build))
    toml_text = _render(inputs, containers, sizes, capacity, cpus, epc_source, unmapped, warnings)
    try:
        load_scenario(toml_text, check_memory=False)
    except EpcsimError as e:
        raise EpcsimError(
            f"the scenario made from {', '.join(inputs)} does not validate: {e}"
        ) from None
    return K8sConversion(toml_text, list(unmapped), list(warnings))


def _render(
    inputs: list[str],
    containers: list[_Container],
    sizes: list[tuple[int, str, str]],
    capacity: int,
    cpus: int | None,
    epc_source: str,
    unmapped: list[str],
    warnings: list[str],
) -> str:
    """The scenario's TOML text: the header comments, the host, the cgroups and the
    enclaves, pod by pod in the manifests' order."""
    lines: list[str] = []
    lines.append(
        _comment(
            f"epcsim scenario from Kubernetes manifests {', '.join(inputs)}: "
            f"{len(containers)} enclaves, EPC {format_size(capacity)} ({epc_source})"
        )
    )
    lines.append(_comment("written by `epcsim from-k8s` (docs/K8S.md); the enclaves are"))
    lines.append(_comment("numbered from 0 in this order: --set enclave.0.workload.duration=200ms"))
    for title, items in (("Not mapped", unmapped), ("Warnings", warnings)):
        lines.append("#")
        lines.append(_comment(f"{title} ({len(items)}):" if items else f"{title}: none"))
        lines += [_comment(f"  {x}") for x in items]
    lines.append("")
    lines.append(f"name = {_toml_str('k8s-' + Path(inputs[0]).stem)}")
    desc = (
        f"Kubernetes manifests {', '.join(inputs)} converted by epcsim from-k8s: each "
        f"container with {EPC_RESOURCE} runs one enclave in its own cgroup, limited as the "
        "NRI sgx-epc plugin limits it."
    )
    lines.append(f"description = {_toml_str(desc)}")
    lines.append("")
    lines.append("[host]")
    lines.append(f"epc = {_toml_str(format_size(capacity))}")
    if cpus is not None:
        lines.append(f"cpus = {cpus}  # the Node's status.capacity[cpu]")
    lines.append("")
    lines.append("[[cgroup]]")
    lines.append(f"path = {_toml_str(CGROUP_ROOT)}")
    made = {CGROUP_ROOT}
    for c, (size, size_src, build) in zip(containers, sizes, strict=True):
        ns_path = f"{CGROUP_ROOT}/{c.obj.namespace}"
        pod_path = f"{ns_path}/{c.pod}"
        path = f"{pod_path}/{c.name}"
        for p in (ns_path, pod_path):
            if p not in made:
                made.add(p)
                lines.append("")
                if p == pod_path:
                    rep = f", {c.replica}" if c.replica else ""
                    lines.append(_comment(f"pod {c.obj.namespace}/{c.pod}: {c.obj.where()}{rep}"))
                lines.append("[[cgroup]]")
                lines.append(f"path = {_toml_str(p)}")
        lines.append("")
        lines.append("[[cgroup]]")
        lines.append(f"path = {_toml_str(path)}")
        if c.misc_max is not None:
            lines.append(f"max = {_toml_str(format_size(c.misc_max))}  # {_clean(c.misc_source)}")
        lines.append("")
        lines.append("[[enclave]]")
        lines.append(f"name = {_toml_str(f'{c.obj.namespace}.{c.pod}.{c.name}')}")
        lines.append(f"cgroup = {_toml_str(path)}")
        lines.append(f"size = {_toml_str(format_size(size))}  # {_clean(size_src)}")
        lines.append(f"build = {_toml_str(build)}")
        lines.append(f"workload = {_toml_value(c.workload)}  # {_clean(c.workload_source)}")
    return "\n".join(lines) + "\n"


def write_scenario(
    conversion: K8sConversion,
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
) -> Path:
    """Write *conversion*'s TOML to *out* atomically (a temporary name, then a rename).

    Refused: *out* naming one of *inputs* (the YAML files, the enclave manifests), even
    with *force*; an existing *out* without *force*; a directory.

    Raises:
        EpcsimError: naming *out*.
    """
    target = Path(out)
    for p in inputs:
        if same_file(p, target) or os.path.abspath(p) == os.path.abspath(target):
            raise EpcsimError(f"{out}: is the input {os.fspath(p)}; write the scenario elsewhere")
    if target.is_dir():
        raise EpcsimError(f"{out}: is a directory")
    if target.exists() and not force:
        raise EpcsimError(f"{out}: exists (use --force to replace it)")
    if not target.parent.is_dir():
        raise EpcsimError(f"{out}: no such directory {target.parent}")
    try:
        atomic_write_text(target, conversion.toml)
    except OSError as e:
        raise EpcsimError(f"{out}: cannot write: {e.strerror or e}") from None
    return target
