"""``epcsim from-k8s``: Kubernetes manifests to a scenario (docs/K8S.md).

The manifests of ``tests/data/k8s/cluster.yaml`` are realistic: a Node with the EPC
capacity the Intel device plugins advertise (``sgx.intel.com/epc``), a Deployment of two
replicas with an init container, an EPC container and a proxy without EPC, a Service, a
Pod without EPC, a StatefulSet whose pods have two EPC containers, a Job whose request
differs from its limit, and a Pod with a request only.  ``cluster.toml`` is the exact
scenario they give.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError
from epcsim.k8s import K8sConversion, from_k8s, parse_quantity, parse_workload, write_scenario
from epcsim.scenario import load_scenario

DATA = Path(__file__).resolve().parent.parent / "data" / "k8s"
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "k8s"

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def convert(tmp_path: Path, text: str, **kwargs) -> K8sConversion:
    p = tmp_path / "pods.yaml"
    p.write_text(text)
    return from_k8s([p], **kwargs)


def error(tmp_path: Path, text: str, **kwargs) -> str:
    p = tmp_path / "pods.yaml"
    p.write_text(text)
    with pytest.raises(EpcsimError) as e:
        from_k8s([p], **kwargs)
    return str(e.value).replace(str(p), "pods.yaml")


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: {container}
      resources:
        limits:
          sgx.intel.com/epc: {epc}
"""


def pod(name: str = "p", container: str = "c", epc: str = "1Mi") -> str:
    return POD.format(name=name, container=container, epc=epc)


# --- the golden conversion ----------------------------------------------------------------


@pytest.fixture
def in_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(DATA)
    return DATA


def test_cluster_converts_to_the_exact_scenario(in_data: Path) -> None:
    conv = from_k8s(["cluster.yaml"])
    assert conv.toml == (in_data / "cluster.toml").read_text()
    where = "cluster.yaml: document"
    assert conv.unmapped == [
        f"{where} 2 (line 22, Deployment shop/web): spec.template.spec.initContainers[0] "
        "migrate: an init container (runs to completion before the containers start): not "
        "mapped",
        f"{where} 2 (line 22, Deployment shop/web): spec.template.spec.containers[0] app: "
        "limits cpu=500m, memory=256Mi: not modelled (the scenario has EPC only; CPU and "
        "memory limits do not apply)",
        f"{where} 2 (line 22, Deployment shop/web): spec.template.spec.containers[1] proxy: "
        "limits memory=64Mi: not modelled (the scenario has EPC only; CPU and memory limits "
        "do not apply)",
        f"{where} 2 (line 22, Deployment shop/web): spec.template.spec.containers[1] proxy: "
        "no sgx.intel.com/epc: no enclave",
        f"{where} 3 (line 65, Service shop/web): kind Service: not a workload",
        f"{where} 4 (line 77, Pod shop/plain): spec.containers[0] nginx: no "
        "sgx.intel.com/epc: no enclave",
        f"{where} 6 (line 115, Job default/report): spec.completions 3 with "
        "spec.parallelism 2: the 2 pods running at once are simulated, not the 1 that would "
        "follow",
    ]
    assert len(conv.warnings) == 3
    assert conv.warnings[0].startswith(
        f"{where} 6 (line 115, Job default/report): spec.template.spec.containers[0]."
        "resources.requests[sgx.intel.com/epc] 1Mi differs from the limit 2Mi"
    )
    assert "Limit must be set for non overcommitable resources" in conv.warnings[1]
    assert conv.warnings[2].startswith(
        "the containers' sgx.intel.com/epc add up to 18874368 bytes, more than the "
        "16777216-byte EPC"
    )
    # every line of both lists is in the scenario's header comments
    header = [line[4:] for line in conv.toml.splitlines() if line.startswith("#   ")]
    assert header == conv.unmapped + conv.warnings


def test_cluster_scenario_tables(in_data: Path) -> None:
    sc = load_scenario((in_data / "cluster.toml").read_text())
    assert sc.capacity == 16 << 20
    assert sc.host.cpus == 8
    leaves = {c.path: c.max for c in sc.cgroup if c.max is not None}
    assert leaves == {
        "/kubepods/shop/web-0/app": "4MiB",
        "/kubepods/shop/web-1/app": "4MiB",
        "/kubepods/shop/kv-0/redis": "2MiB",
        "/kubepods/shop/kv-0/attest": "512KiB",
        "/kubepods/shop/kv-1/redis": "2MiB",
        "/kubepods/shop/kv-1/attest": "512KiB",
        "/kubepods/default/report-0/worker": "2MiB",
        "/kubepods/default/report-1/worker": "2MiB",
        "/kubepods/default/legacy/enclave": "1MiB",
    }
    assert len(sc.cgroup) == 1 + 2 + 7 + 9  # /kubepods, 2 namespaces, 7 pods, 9 containers
    assert [(e.name, e.cgroup, e.size) for e in sc.enclave] == [
        (f"{p.split('/')[2]}.{p.split('/')[3]}.{p.split('/')[4]}", p, leaves[p]) for p in leaves
    ]
    assert {e.workload["alpha"] for e in sc.enclave[:2]} == {1.1}  # the pod's annotation
    assert {e.workload["alpha"] for e in sc.enclave[2:]} == {0.9}  # the default


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("k8s")
    src = d / "cluster.yaml"
    src.write_bytes((DATA / "cluster.yaml").read_bytes())
    out = d / "cluster.toml"
    r = invoke("from-k8s", src, "--out", out)
    return d, src, out, r


def test_cli_writes_the_scenario_and_lists_what_is_not_mapped(cli_run) -> None:
    d, src, out, r = cli_run
    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote {out} (9 enclaves; 7 not mapped, 3 warnings)\n"
    lines = r.stderr.splitlines()
    assert len(lines) == 10
    assert all(x.startswith("epcsim: not mapped: ") for x in lines[:7])
    assert all(x.startswith("epcsim: warning: ") for x in lines[7:])
    assert "kind Service: not a workload" in lines[4]
    # the same text as the golden file, but for the input's name
    expected = (DATA / "cluster.toml").read_text().replace("cluster.yaml", str(src))
    assert out.read_text() == expected
    assert src.read_bytes() == (DATA / "cluster.yaml").read_bytes()  # input unchanged
    assert sorted(p.name for p in d.iterdir() if p.name != "run") == [
        "cluster.toml",
        "cluster.yaml",
    ]  # no temporary file left beside them


def test_generated_scenario_validates_and_runs(cli_run) -> None:
    d, _, out, _ = cli_run
    r = invoke("validate", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ok: k8s-cluster (")
    run_dir = d / "run"
    r = invoke("run", out, "--set", "host.duration=3ms", "--engine", "reference", "--out", run_dir)
    assert r.exit_code == 0, r.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sorted(summary["enclaves"]) == sorted(
        [
            "shop.web-0.app",
            "shop.web-1.app",
            "shop.kv-0.redis",
            "shop.kv-0.attest",
            "shop.kv-1.redis",
            "shop.kv-1.attest",
            "default.report-0.worker",
            "default.report-1.worker",
            "default.legacy.enclave",
        ]
    )
    cg = summary["cgroups"]
    assert cg["/kubepods/shop/web-0/app"]["limit_bytes"] == 4 << 20
    assert cg["/kubepods/shop/kv-1/attest"]["limit_bytes"] == 512 << 10
    assert summary["capacity_bytes"] == 16 << 20


def test_cli_refuses_an_existing_out_and_an_input(cli_run, tmp_path: Path) -> None:
    d, src, out, _ = cli_run
    before = out.read_bytes()
    r = invoke("from-k8s", src, "--out", out)
    assert r.exit_code == 2
    assert r.stderr == f"epcsim: error: {out}: exists (use --force to replace it)\n"
    assert out.read_bytes() == before
    r = invoke("from-k8s", src, "--out", src, "--force")
    assert r.exit_code == 2
    assert r.stderr == (f"epcsim: error: {src}: is the input {src}; write the scenario elsewhere\n")
    assert src.read_bytes() == (DATA / "cluster.yaml").read_bytes()
    # an enclave manifest is an input too
    man = tmp_path / "web.manifest"
    man.write_bytes((DATA / "web.manifest").read_bytes())
    r = invoke("from-k8s", src, "--manifest", f"app={man}", "--out", man, "--force")
    assert r.exit_code == 2 and "is the input" in r.stderr
    assert man.read_bytes() == (DATA / "web.manifest").read_bytes()


def test_force_replaces_atomically(tmp_path: Path) -> None:
    src = tmp_path / "pods.yaml"
    src.write_text(pod())
    out = tmp_path / "s.toml"
    out.write_text("old")
    r = invoke("from-k8s", src, "--epc", "8MiB", "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("# epcsim scenario from Kubernetes manifests")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pods.yaml", "s.toml"]
    r = invoke("from-k8s", src, "--epc", "8MiB", "--out", tmp_path)
    assert r.exit_code == 2 and r.stderr == f"epcsim: error: {tmp_path}: is a directory\n"


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "pods.yaml"
    src.write_text("kind: Pod\nmetadata: [\n")
    r = invoke("from-k8s", src, "--epc", "8MiB", "--out", tmp_path / "s.toml")
    assert r.exit_code == 2
    assert r.stderr.startswith(f"epcsim: error: {src}: line 3, column 1: not valid YAML: ")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "s.toml").exists()
    r = invoke("from-k8s", src, "--workload", "c", "--out", tmp_path / "s.toml")
    assert r.exit_code == 2
    assert r.stderr == "epcsim: error: --workload 'c': expected CONTAINER=VALUE\n"


def test_public_names() -> None:
    import epcsim.k8s

    assert sorted(epcsim.k8s.__all__) == [
        "EPC_RESOURCE",
        "K8sConversion",
        "from_k8s",
        "parse_quantity",
        "parse_workload",
        "write_scenario",
    ]
    assert epcsim.k8s.EPC_RESOURCE == "sgx.intel.com/epc"


def test_help() -> None:
    r = runner.invoke(app, ["from-k8s", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.stdout
    for option in ("--out", "--epc", "--manifest", "--workload", "--duration", "--force"):
        assert option in r.stdout
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "from-k8s" in r.stdout


# --- quantities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("1E", 10**18),
        ("1.5Ki", 1536),
        ("0.5Mi", 2**19),
        (".5Ki", 512),
        ("5.", 5),
        ("+7", 7),
        ("1500m", 1.5),
        ("2097152", 2097152),
        (4096, 4096),
        (1.5e9, 1_500_000_000),
        ("128974848000m", 128974848),
        ("100k", 100_000),
        ("3Ei", 3 * 2**60),
    ],
)
def test_kubernetes_quantities(text: str | int | float, value: float) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["1K", "1ki", "1 Gi", "1GiB", "1e", "1e+", "Gi1", "1.2.3", "", "0x10", "1_000"]
)
def test_quantities_kubernetes_refuses(text: str) -> None:
    with pytest.raises(EpcsimError, match="not a Kubernetes quantity"):
        parse_quantity(text, what="q")


@pytest.mark.parametrize(
    ("epc", "message"),
    [
        ("-1Mi", 'must be greater than or equal to 0, got "-1Mi"'),
        (
            "1500m",
            'must be an integer (extended resources are whole units, here bytes), got "1500m"',
        ),
        ("1.5", "must be an integer (extended resources are whole units, here bytes), got 1.5"),
        ("16Ei", '"16Ei" is more than 2^63-1 bytes'),
        (
            "'64MB'",
            'not a Kubernetes quantity: "64MB" (a number with an optional suffix Ki, Mi, Gi, '
            "Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent e9)",
        ),
        ("true", "expected a quantity such as 64Mi, got true"),
    ],
)
def test_a_bad_epc_quantity_names_the_field(tmp_path: Path, epc: str, message: str) -> None:
    msg = error(tmp_path, pod(epc=epc), epc="8MiB")
    assert msg == (
        "pods.yaml: document 1 (line 1, Pod default/p): "
        f"spec.containers[0].resources.limits[sgx.intel.com/epc]: {message}"
    )


# --- errors -------------------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    text = pod() + "---\nkind: Pod\nmetadata:\n  name: q\n   bad: indent\n"
    assert error(tmp_path, text, epc="8MiB") == (
        "pods.yaml: line 15, column 7: not valid YAML: mapping values are not allowed here"
    )


def test_control_characters_and_deep_nesting(tmp_path: Path) -> None:
    assert error(tmp_path, pod() + "# bell \x07\n", epc="8MiB") == (
        "pods.yaml: line 11: not valid YAML: character #x0007: special characters are not allowed"
    )
    assert error(tmp_path, "a: " + "[" * 3000 + "]" * 3000 + "\n", epc="8MiB") == (
        "pods.yaml: not valid YAML: nested too deeply"
    )


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = pod() + "      resources: {}\n"
    assert error(tmp_path, text, epc="8MiB") == (
        'pods.yaml: line 11, column 7: duplicate key "resources" (first at line 8; '
        "Kubernetes refuses duplicate keys)"
    )


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "pods.yaml"
    p.write_bytes(pod().encode() + b"# caf\xe9\n")
    with pytest.raises(EpcsimError) as e:
        from_k8s([p], epc="8MiB")
    offset = len(pod().encode()) + len(b"# caf")
    assert str(e.value) == f"{p}: not UTF-8 text: byte 0xe9 at offset {offset} (line 11)"


@pytest.mark.parametrize(
    ("doc", "got"), [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a number")]
)
def test_a_document_that_is_not_a_mapping(tmp_path: Path, doc: str, got: str) -> None:
    assert error(tmp_path, pod() + "---\n" + doc, epc="8MiB") == (
        "pods.yaml: document 2 (line 12): a Kubernetes object is a mapping (apiVersion, "
        f"kind, metadata, ...), got {got}"
    )


def test_empty_documents_are_skipped_and_kind_is_required(tmp_path: Path) -> None:
    conv = convert(tmp_path, "---\n" + pod() + "---\n---\n", epc="8MiB")
    assert conv.unmapped == [] and conv.warnings == []
    assert error(tmp_path, "metadata: {name: x}\n", epc="8MiB") == (
        "pods.yaml: document 1 (line 1): kind: required (a Kubernetes object names its "
        "kind), got null"
    )


def test_duplicate_names(tmp_path: Path) -> None:
    assert error(tmp_path, pod("a") + "---\n" + pod("a"), epc="8MiB") == (
        "pods.yaml: document 2 (line 12, Pod default/a): metadata.name: a second Pod of "
        "that name (the first: pods.yaml: document 1 (line 1, Pod default/a))"
    )
    deployment = """\
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: c
          resources: {limits: {sgx.intel.com/epc: 1Mi}}
"""
    assert error(tmp_path, deployment + "---\n" + pod("web-1"), epc="8MiB") == (
        "pods.yaml: document 2 (line 11, Pod default/web-1): metadata.name: its pod "
        "default/web-1 has the name of a pod of pods.yaml: document 1 (line 1, Deployment "
        "default/web)"
    )
    two = pod().replace("  containers:\n", "  containers:\n    - name: c\n")
    assert error(tmp_path, two, epc="8MiB") == (
        "pods.yaml: document 1 (line 1, Pod default/p): spec.containers[1].name: duplicate "
        'container name "c" in the pod'
    )


def test_no_epc_anywhere(tmp_path: Path) -> None:
    assert error(tmp_path, pod()) == (
        "no EPC size: give --epc (e.g. --epc 64GiB) or a Node with "
        'status.capacity["sgx.intel.com/epc"] in the YAML'
    )
    plain = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n"
    assert error(tmp_path, plain, epc="8MiB") == (
        "no container has an sgx.intel.com/epc limit or request in pods.yaml: nothing to simulate"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(EpcsimError, match=r"nope\.yaml: no such file$"):
        from_k8s([tmp_path / "nope.yaml"], epc="8MiB")
    with pytest.raises(EpcsimError, match=r": is a directory, not a YAML file$"):
        from_k8s([tmp_path], epc="8MiB")


# --- the host -----------------------------------------------------------------------------


NODE = """\
kind: Node
metadata: {{name: {name}}}
status:
  capacity: {{cpu: "{cpu}", sgx.intel.com/epc: "{epc}"}}
---
"""


def test_epc_from_the_option_or_a_node(tmp_path: Path) -> None:
    text = NODE.format(name="n1", cpu="3500m", epc="98566144") + pod()
    sc = load_scenario(convert(tmp_path, text).toml)
    assert sc.capacity == 98566144 and sc.host.cpus == 3
    conv = convert(tmp_path, text, epc="64Gi")
    sc = load_scenario(conv.toml)
    assert sc.capacity == 64 << 30
    assert conv.warnings == [
        "pods.yaml: document 1 (line 1, Node n1): its sgx.intel.com/epc 98566144 is not the "
        "host's EPC: the given epc 64GiB is used".replace("pods.yaml", str(tmp_path / "pods.yaml"))
    ]
    assert load_scenario(convert(tmp_path, pod(), epc="32MiB").toml).capacity == 32 << 20
    two = NODE.format(name="a", cpu="4", epc="64Mi") + NODE.format(name="b", cpu="4", epc="32Mi")
    assert error(tmp_path, two + pod()) == (
        "the Nodes have different EPC sizes (a: 67108864, b: 33554432): the scenario is one "
        "host; choose its EPC with --epc"
    )
    odd = NODE.format(name="n", cpu="2", epc="1000000") + pod()
    conv = convert(tmp_path, odd)
    assert load_scenario(conv.toml).capacity == 999424
    assert conv.warnings[0].endswith("the EPC is rounded down to 999424")
    assert error(tmp_path, pod(), epc="1000000") == (
        'epc: must be a positive multiple of 4096 bytes, got "1000000"'
    )


# --- replicas and kinds ---------------------------------------------------------------------


def test_kinds_replicas_and_lists(tmp_path: Path) -> None:
    template = """\
  template:
    spec:
      containers:
        - name: c
          resources: {limits: {sgx.intel.com/epc: 1Mi}}
"""
    text = (
        "kind: DaemonSet\nmetadata: {name: ds, namespace: sys}\nspec:\n" + template + "---\n"
        "kind: ReplicaSet\nmetadata: {name: rs}\nspec:\n  replicas: 3\n" + template + "---\n"
        "kind: StatefulSet\nmetadata: {name: none}\nspec:\n  replicas: 0\n" + template + "---\n"
        "kind: Job\nmetadata: {name: j}\nspec:\n  parallelism: 4\n  completions: 2\n"
        + template
        + "---\nkind: List\nitems:\n"
        "  - {kind: Pod, metadata: {name: l1}, spec: {containers: [{name: c, resources: "
        "{limits: {sgx.intel.com/epc: 1Mi}}}]}}\n"
        "  - {kind: ConfigMap, metadata: {name: cm}}\n"
        "---\nkind: CronJob\nmetadata: {name: cj}\n"
    )
    conv = convert(tmp_path, text, epc="64MiB")
    sc = load_scenario(conv.toml)
    assert [e.name for e in sc.enclave] == [
        "sys.ds-0.c",
        "default.rs-0.c",
        "default.rs-1.c",
        "default.rs-2.c",
        "default.j-0.c",
        "default.j-1.c",
        "default.l1.c",
    ]
    p = str(tmp_path / "pods.yaml")
    assert conv.unmapped == [
        f"{p}: document 3 (line 20, StatefulSet default/none): no pod (0 replicas)",
        f"{p}: document 5 (line 41), items[1] (ConfigMap default/cm): kind ConfigMap: not a "
        "workload",
        f"{p}: document 6 (line 46, CronJob default/cj): kind CronJob: its Jobs run on a "
        "schedule (convert one of them as a Job)",
    ]


def test_too_many_replicas(tmp_path: Path) -> None:
    text = (
        "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1000000000\n  template:\n"
        "    spec: {containers: [{name: c, resources: {limits: {sgx.intel.com/epc: 1Mi}}}]}\n"
    )
    assert error(tmp_path, text, epc="8MiB") == (
        "pods.yaml: document 1 (line 1, Deployment default/d): spec.replicas: 1000000000 "
        "pods: a scenario holds at most 32767 cgroups"
    )


def test_init_sidecar_and_ephemeral_containers_are_listed(tmp_path: Path) -> None:
    text = pod() + (
        "  initContainers:\n"
        "    - name: init\n"
        "      resources: {limits: {sgx.intel.com/epc: 2Mi}}\n"
        "    - name: side\n"
        "      restartPolicy: Always\n"
        "  ephemeralContainers:\n"
        "    - name: debug\n"
    )
    conv = convert(tmp_path, text, epc="8MiB")
    p = str(tmp_path / "pods.yaml")
    assert conv.unmapped == [
        f"{p}: document 1 (line 1, Pod default/p): spec.initContainers[0] init: an init "
        "container (runs to completion before the containers start): not mapped (its "
        "sgx.intel.com/epc limit 2Mi is not simulated)",
        f"{p}: document 1 (line 1, Pod default/p): spec.initContainers[1] side: a sidecar "
        "init container (restartPolicy Always, beside the containers): not mapped",
        f"{p}: document 1 (line 1, Pod default/p): spec.ephemeralContainers[0] debug: an "
        "ephemeral (debugging) container: not mapped",
    ]


# --- limits: NRI annotations, rounding ----------------------------------------------------


def test_nri_annotations_set_misc_max_as_the_plugin_does(tmp_path: Path) -> None:
    text = pod().replace(
        "  name: p\n",
        '  name: p\n  annotations:\n    epc-limit.nri.io/container.c: "524288"\n'
        '    epc-limit.nri.io/pod: "0"\n',
    )
    conv = convert(tmp_path, text, epc="8MiB")
    sc = load_scenario(conv.toml)
    assert sc.cgroup[-1].max == "512KiB"
    assert sc.enclave[0].size == "1MiB"  # the enclave keeps the resource's size
    assert "misc.max is the annotation's" in conv.warnings[0]
    zero = pod().replace("  name: p\n", '  name: p\n  annotations: {epc-limit.nri.io: "0"}\n')
    conv = convert(tmp_path, zero, epc="8MiB")
    assert load_scenario(conv.toml).cgroup[-1].max is None
    assert "sets no misc.max for c, which runs unlimited" in conv.warnings[0]
    bad = pod().replace("  name: p\n", "  name: p\n  annotations: {epc-limit.nri.io: 1Mi}\n")
    assert error(tmp_path, bad, epc="8MiB") == (
        "pods.yaml: document 1 (line 1, Pod default/p): metadata.annotations[epc-limit.nri.io]"
        ': the NRI sgx-epc plugin reads a number of bytes (base 10), got "1Mi"'
    )


def test_limits_are_kept_and_sizes_rounded_down_to_pages(tmp_path: Path) -> None:
    sc = load_scenario(convert(tmp_path, pod(epc="1000000"), epc="8MiB").toml)
    assert sc.cgroup[-1].max == "1000000B"  # misc.max as written: the kernel floors it
    assert sc.enclave[0].size == "976KiB"  # 244 pages
    conv = convert(tmp_path, pod(epc="100"), epc="8MiB")
    assert load_scenario(conv.toml).enclave[0].size == "4KiB"
    assert conv.warnings == [
        "default/p/c: sgx.intel.com/epc 100 is less than one page: its enclave cannot get "
        "its SECS page (ECREATE fails in the run)"
    ]
    zero = convert(tmp_path, pod(epc="0") + "---\n" + pod("q"), epc="8MiB")
    assert zero.unmapped[0].endswith("spec.containers[0] c: sgx.intel.com/epc is 0: no enclave")


# --- enclave manifests and workloads ------------------------------------------------------


def test_gramine_and_occlum_manifests_size_the_enclaves(in_data: Path) -> None:
    conv = from_k8s(
        ["cluster.yaml"],
        manifests={"web/app": "web.manifest", "redis": "Occlum.json"},
        workloads={"shop/kv-1/attest": "uniform", "worker": "hotcold:0.2:0.8"},
    )
    sc = load_scenario(conv.toml)
    by = {e.name: e for e in sc.enclave}
    assert by["shop.web-0.app"].size == by["shop.web-1.app"].size == "8MiB"
    assert by["shop.kv-0.redis"].size == "1MiB"
    assert by["shop.kv-1.attest"].workload == {"pattern": "uniform", "duration": "1s"}
    assert by["shop.kv-0.attest"].workload["pattern"] == "zipf"
    assert by["default.report-1.worker"].workload == {
        "pattern": "hotcold",
        "hot_fraction": 0.2,
        "hot_probability": 0.8,
        "duration": "1s",
    }
    assert conv.warnings[3:] == [
        f"shop/web-{i}/app: the enclave (8MiB, sgx.enclave_size of web.manifest) is larger "
        "than its misc.max (4MiB): it reclaims its own pages"
        for i in (0, 1)
    ]
    assert 'size = "8MiB"  # sgx.enclave_size of web.manifest' in conv.toml


def test_gramine_edmm_and_sizes(tmp_path: Path) -> None:
    man = tmp_path / "app.manifest"
    man.write_text('[sgx]\nedmm_enable = true\nenclave_size = "0x200000"\n')
    sc = load_scenario(convert(tmp_path, pod(), epc="8MiB", manifests={"c": man}).toml)
    assert (sc.enclave[0].size, sc.enclave[0].build) == ("2MiB", "eaug")
    man.write_text("[sgx]\nedmm_enable = true\n")
    conv = convert(tmp_path, pod(), epc="8MiB", manifests={"c": man})
    assert load_scenario(conv.toml).enclave[0].size == "1MiB"  # the limit
    assert "Gramine's default is 1024G" in conv.warnings[0]
    man.write_text("sgx.debug = true\n")
    sc = load_scenario(convert(tmp_path, pod(), epc="8MiB", manifests={"c": man}).toml)
    assert sc.enclave[0].size == "256MiB"  # Gramine's default without EDMM
    for value, message in [
        ('"3M"', "is not a power of two of at least 8192 bytes"),
        ('"12Q"', 'not a Gramine size: "12Q"'),
        ("512", 'expected a string such as "512M", got 512'),
    ]:
        man.write_text(f"sgx.enclave_size = {value}\n")
        with pytest.raises(EpcsimError) as e:
            convert(tmp_path, pod(), epc="8MiB", manifests={"c": man})
        assert str(e.value).startswith(f"{man}: sgx.enclave_size: ")
        assert message in str(e.value)
    man.write_text('sgx.enclave_size = "{{ size }}"\nloader.x = {{ y }}\n')
    with pytest.raises(EpcsimError, match="render a .manifest.template with gramine-manifest"):
        convert(tmp_path, pod(), epc="8MiB", manifests={"c": man})


def test_occlum_sizes(tmp_path: Path) -> None:
    occ = tmp_path / "Occlum.json"
    occ.write_text(json.dumps({"resource_limits": {"user_space_size": "300KB"}}))
    sc = load_scenario(convert(tmp_path, pod(), epc="8MiB", manifests={"c": occ}).toml)
    assert sc.enclave[0].size == "300KiB"
    occ.write_text(
        json.dumps({"resource_limits": {"user_space_size": "1MB", "user_space_max_size": "2MB"}})
    )
    sc = load_scenario(convert(tmp_path, pod(), epc="8MiB", manifests={"c": occ}).toml)
    assert sc.enclave[0].size == "2MiB"  # without EDMM Occlum reserves the maximum
    occ.write_text(json.dumps({"resource_limits": {"user_space_size": "256"}}))
    with pytest.raises(EpcsimError) as e:
        convert(tmp_path, pod(), epc="8MiB", manifests={"c": occ})
    assert str(e.value) == (
        f'{occ}: resource_limits.user_space_size: not an Occlum size: "256" (a whole '
        "number with KB, MB, GB, TB or B)"
    )


def test_container_selectors(in_data: Path) -> None:
    def fails(**kw) -> str:
        with pytest.raises(EpcsimError) as e:
            from_k8s(["cluster.yaml"], **kw)
        return str(e.value)

    assert fails(workloads={"app": "uniform", "shop/web/app": "sequential"}) == (
        "--workload: both app and shop/web/app name shop/web-0/app"
    )
    assert fails(workloads={"nope": "uniform"}).startswith(
        "--workload nope: no container with sgx.intel.com/epc matches (containers: "
        "default/legacy/enclave, default/report/worker, shop/kv/attest, shop/kv/redis, "
        "shop/web/app)"
    )
    assert fails(manifests={"proxy": "web.manifest"}) == (
        "--manifest proxy: shop/web-0/proxy has no sgx.intel.com/epc: it runs no enclave"
    )
    assert fails(workloads={"a/b/c/d": "uniform"}) == (
        "--workload a/b/c/d: name a container as CONTAINER, POD/CONTAINER or "
        "NAMESPACE/POD/CONTAINER"
    )
    assert (
        fails(workloads={"app": "zipf:-1"})
        == '--workload app=zipf:-1: alpha must be > 0, got "zipf:-1"'
    )


def test_an_ambiguous_container_name(tmp_path: Path) -> None:
    text = pod("a") + "---\n" + pod("b")
    assert error(tmp_path, text, epc="8MiB", workloads={"c": "uniform"}) == (
        "--workload c: ambiguous, it names default/a/c, default/b/c; give POD/CONTAINER or "
        "NAMESPACE/POD/CONTAINER"
    )
    sc = load_scenario(convert(tmp_path, text, epc="8MiB", workloads={"b/c": "uniform"}).toml)
    assert [e.workload["pattern"] for e in sc.enclave] == ["zipf", "uniform"]


@pytest.mark.parametrize(
    ("spec", "table"),
    [
        ("zipf", {"pattern": "zipf", "alpha": 0.9}),
        ("zipf:1.2", {"pattern": "zipf", "alpha": 1.2}),
        ("uniform", {"pattern": "uniform"}),
        ("sequential", {"pattern": "sequential"}),
        ("hotcold", {"pattern": "hotcold", "hot_fraction": 0.1, "hot_probability": 0.9}),
    ],
)
def test_workload_specs(spec: str, table: dict) -> None:
    assert parse_workload(spec) == table


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zipf:x", 'w: alpha must be a number, got "x"'),
        ("zipf:nan", 'w: alpha must be a finite number, got "nan"'),
        ("uniform:1", 'w: uniform takes no parameter, got "uniform:1"'),
        ("hotcold:2", 'w: hot_fraction must be in (0, 1], got "hotcold:2"'),
        ("loop", 'w: unknown workload "loop"'),
    ],
)
def test_bad_workload_specs(spec: str, message: str) -> None:
    with pytest.raises(EpcsimError) as e:
        parse_workload(spec, what="w")
    assert str(e.value).startswith(message)


def test_a_bad_workload_annotation_names_it(tmp_path: Path) -> None:
    text = pod().replace("  name: p\n", "  name: p\n  annotations: {epcsim.io/workload: zipf:0}\n")
    assert error(tmp_path, text, epc="8MiB") == (
        "pods.yaml: document 1 (line 1, Pod default/p): metadata.annotations"
        '[epcsim.io/workload]: alpha must be > 0, got "zipf:0"'
    )


# --- the TOML text ------------------------------------------------------------------------


def test_strings_and_comments_stay_valid_toml(tmp_path: Path) -> None:
    """A cpu limit with a newline and quotes lands in a comment; the file name with a
    quote and a backslash in the name and description strings."""
    d = tmp_path / 'we"ird\\dir'
    d.mkdir()
    text = pod().replace(
        "          sgx.intel.com/epc: 1Mi\n",
        '          sgx.intel.com/epc: 1Mi\n          cpu: "1\\n[host]\\u0007\\"x"\n',
    )
    p = d / "pods.yaml"
    p.write_text(text)
    conv = from_k8s([p], epc="8MiB")
    data = tomllib.loads(conv.toml)
    assert data["description"].startswith(f"Kubernetes manifests {p} converted")
    assert len(data["enclave"]) == 1 and "epc" in data["host"]
    assert conv.unmapped[0].endswith(
        'limits cpu="1\\n[host]\\u0007\\"x": not modelled (the scenario has EPC only; CPU and '
        "memory limits do not apply)"
    )


def test_write_scenario_refuses_without_force(tmp_path: Path) -> None:
    conv = convert(tmp_path, pod(), epc="8MiB")
    out = tmp_path / "x.toml"
    assert write_scenario(conv, out) == out
    with pytest.raises(EpcsimError, match="exists"):
        write_scenario(conv, out)
    write_scenario(conv, out, force=True)
    with pytest.raises(EpcsimError, match="no such directory"):
        write_scenario(conv, tmp_path / "no" / "x.toml")
    link = tmp_path / "link.yaml"
    os.symlink(tmp_path / "pods.yaml", link)
    with pytest.raises(EpcsimError, match="is the input"):
        write_scenario(conv, link, inputs=[tmp_path / "pods.yaml"], force=True)


# --- the example --------------------------------------------------------------------------


def test_the_example_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/k8s/sgx-apps.toml is what its README's command writes."""
    monkeypatch.chdir(EXAMPLES)
    conv = from_k8s(["sgx-apps.yaml"], manifests={"kv/redis": "redis.manifest"})
    assert conv.toml == (EXAMPLES / "sgx-apps.toml").read_text()
    assert load_scenario(str(EXAMPLES / "sgx-apps.toml")).name == "k8s-sgx-apps"


# --- fuzz: bad input never crashes -----------------------------------------------------------


def _converts_or_refuses(path: Path, **kwargs) -> None:
    """from_k8s returns a scenario that validates, or raises EpcsimError: nothing else."""
    try:
        conv = from_k8s([path], **kwargs)
    except EpcsimError as e:
        assert "\n" not in str(e).strip() or "not valid" in str(e), str(e)
        return
    load_scenario(conv.toml)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path_factory: pytest.TempPathFactory, data) -> None:
    src = bytearray((DATA / "cluster.yaml").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(src) - 1))
        op = data.draw(st.sampled_from(["replace", "delete", "truncate"]))
        if op == "replace":
            src[i] = data.draw(st.sampled_from(b" :-\n\t{}[]&*!|>'\"#%@`0aZ\x00\xff"))
        elif op == "delete":
            del src[i]
        else:
            del src[i:]
            break
    p = tmp_path_factory.mktemp("fuzz") / "pods.yaml"
    p.write_bytes(bytes(src))
    _converts_or_refuses(p, epc="16MiB")


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_fuzz_mutated_objects(tmp_path_factory: pytest.TempPathFactory, data) -> None:
    """Any field of any object replaced by a value of another type (or removed)."""
    import yaml

    docs = list(yaml.safe_load_all((DATA / "cluster.yaml").read_text()))
    for _ in range(data.draw(st.integers(1, 3))):
        node: Any = docs[data.draw(st.integers(0, len(docs) - 1))]
        # walk down to a random container
        for _ in range(data.draw(st.integers(0, 8))):
            if isinstance(node, dict) and node:
                key = data.draw(st.sampled_from(sorted(node, key=str)))
                if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                    if data.draw(st.booleans()):
                        node[key] = data.draw(_VALUES)
                    else:
                        del node[key]
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                node = node[data.draw(st.integers(0, len(node) - 1))]
            else:
                break
    p = tmp_path_factory.mktemp("fuzz") / "pods.yaml"
    p.write_text(yaml.safe_dump_all(docs))
    _converts_or_refuses(p)
