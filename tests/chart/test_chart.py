"""The Helm chart charts/sftd: lint, render operator-shaped values, validate
the manifests against the Kubernetes schemas, and check what matters for a
working SFT: host networking, the sftd command line, probes, privileges, the
URL routing of the Ingress and the join-call proxy, draining, failures on
missing required values, and compatibility with the values of Wire's chart.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sftd"
VALUES = Path(__file__).resolve().parent / "values"

HOST_LIKE_FLAGS_WITHOUT_VALUE = {"-T", "-a", "-q", "-v"}
KUBE_VERSIONS = ("1.25.0", "1.35.0")  # oldest and newest checked; helm's default is 1.35
CRD_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


@dataclass(frozen=True)
class Scenario:
    file: str
    umbrella: bool
    release: str
    namespace: str
    fullname: str
    external_ip: str  # what the init container found on the node ("" = none)


SCENARIOS = {
    "umbrella-crt": Scenario("umbrella-crt.yaml", True, "wire", "wire", "wire-sftd", "203.0.113.7"),
    "umbrella-multisft": Scenario("umbrella-multisft.yaml", True, "prod", "calling", "prod-sftd", ""),
    "standalone-issuer": Scenario("standalone-issuer.yaml", False, "sftd", "sft", "sftd", "198.51.100.20"),
    "standalone-userspace": Scenario("standalone-userspace.yaml", False, "conf", "default", "conf-sftd", "2001:db8::5"),
}


def values_of(yaml, s: Scenario) -> dict:
    doc = yaml.safe_load((VALUES / s.file).read_text())
    return doc["sftd"] if s.umbrella else doc


# --- rendering ------------------------------------------------------------


def helm_template(helm, chart: Path, release: str, namespace: str, args: list[str],
                  kube_version: str | None = None) -> subprocess.CompletedProcess:
    cmd = [helm, "template", release, str(chart), "--namespace", namespace, *args]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="session")
def render(helm, yaml, umbrella_chart):
    @functools.cache
    def _render(name: str, kube_version: str | None = None) -> tuple:
        s = SCENARIOS[name]
        chart = umbrella_chart if s.umbrella else CHART
        run = helm_template(helm, chart, s.release, s.namespace, ["-f", str(VALUES / s.file)], kube_version)
        assert run.returncode == 0, run.stderr
        return tuple(d for d in yaml.safe_load_all(run.stdout) if d)

    return _render


def render_standalone(helm, yaml, *sets: str, values: dict | None = None, tmp_path: Path | None = None):
    """Renders the chart alone with --set pairs; returns (process, documents)."""
    args: list[str] = []
    for s in sets:
        args += ["--set", s]
    if values is not None:
        assert tmp_path is not None
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["-f", str(f)]
    run = helm_template(helm, CHART, "sftd", "default", args)
    docs = [d for d in yaml.safe_load_all(run.stdout) if d] if run.returncode == 0 else []
    return run, docs


BASE_SETS = ("host=sft.example.com", "allowOrigin=https://app.example.com",
             "tls.crt=CRT", "tls.key=KEY")


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def sftd_container(sts: dict) -> dict:
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "sftd")


def all_containers(docs):
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            spec = d["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield d, c


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- sftd's command line, as the kubelet and the container would build it ---


def kubelet_expand(arg: str, env: dict) -> str:
    """The kubelet's expansion of command/args: $(VAR) of a defined variable is
    replaced, $$ becomes $, anything else (e.g. a shell's $(cat f)) stays."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if arg.startswith("$(", i) and (end := arg.find(")", i + 2)) != -1:
            name = arg[i + 2:end]
            out.append(env.get(name, arg[i:end + 1]))
            i = end + 1
            continue
        out.append(arg[i])
        i += 1
    return "".join(out)


def run_sftd_command(container: dict, tmp_path: Path, pod: dict, external_ip: str,
                     multi_sft: dict | None = None) -> list[str]:
    """Runs the container's command with a fake `sftd` that records its argv."""
    env_refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    field_values = {"status.podIP": pod["ip"], "metadata.name": pod["name"],
                    "metadata.namespace": pod["namespace"]}
    env = {name: field_values[path] for name, path in env_refs.items()}

    files = tmp_path / "pod"
    (files / "external-ip").mkdir(parents=True)
    (files / "external-ip" / "ip").write_text(external_ip)
    if multi_sft:
        (files / "multi-sft-config").mkdir()
        for k, v in multi_sft.items():
            (files / "multi-sft-config" / k).write_text(v)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv.json"
    fake = bindir / "sftd"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)

    command = [kubelet_expand(a, env) for a in container["command"]]
    args = [kubelet_expand(a, env) for a in container["args"]]
    unresolved = [a for a in command + args if re.search(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", a)]
    assert not unresolved, f"args reference undefined env vars: {unresolved}"
    assert command[:2] == ["/bin/sh", "-ec"]
    script = command[2].replace("/external-ip/", f"{files}/external-ip/")
    script = script.replace("/multi-sft-config/", f"{files}/multi-sft-config/")
    run = subprocess.run(["/bin/sh", "-ec", script, *command[3:], *args], capture_output=True,
                         text=True, env={**env, "PATH": f"{bindir}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    return json.loads(record.read_text())


def parse_argv(argv: list[str]) -> dict[str, list]:
    opts: dict[str, list] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("-"), f"stray argument {flag!r} in {argv}"
        if flag in HOST_LIKE_FLAGS_WITHOUT_VALUE:
            opts.setdefault(flag, []).append(True)
            i += 1
        else:
            opts.setdefault(flag, []).append(argv[i + 1])
            i += 2
    return opts


# --- lint and schema validation ----------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_helm_lint(helm, umbrella_chart, name):
    s = SCENARIOS[name]
    chart = umbrella_chart if s.umbrella else CHART
    run = subprocess.run([helm, "lint", "--strict", str(chart), "-f", str(VALUES / s.file)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # helm 4's lint only warns about `required`/`fail`: these values must not trigger them
    assert "missing required value" not in run.stderr and "funcMap fail" not in run.stderr, run.stderr
    assert "[WARNING]" not in run.stdout and "[ERROR]" not in run.stdout, run.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_manifests_validate_against_kubernetes_schemas(render, kubernetes_validate, name, kube_version):
    docs = render(name, kube_version)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "Deployment", "ConfigMap", "Ingress", "ServiceAccount",
            "ClusterRole", "ClusterRoleBinding"} <= kinds
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRD_KINDS:
            assert d["metadata"]["name"] and isinstance(d["spec"], dict)
            continue
        try:
            kubernetes_validate.validate(d, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")


# --- the StatefulSet -----------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_statefulset_host_network_and_identity(render, yaml, name):
    s = SCENARIOS[name]
    docs = render(name)
    values = values_of(yaml, s)
    sts = one(docs, "StatefulSet", s.fullname)
    pod = sts["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["replicas"] == values.get("replicaCount", 1)
    # Selector exactly as in Wire's chart: a StatefulSet's selector is immutable,
    # so anything else would break `helm upgrade` from Wire's chart.
    assert sts["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sftd", "app.kubernetes.io/instance": s.release}
    # serviceName: a headless Service keeping draining pods in DNS.
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert sts["spec"]["serviceName"] == s.fullname
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert selects(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    # one pod per node
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(anti[0]["labelSelector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])
    assert pod.get("nodeSelector") == values.get("nodeSelector")
    assert pod.get("tolerations") == values.get("tolerations")
    for k, v in (values.get("podAnnotations") or {}).items():
        assert sts["spec"]["template"]["metadata"]["annotations"][k] == v
    assert sftd_container(sts)["resources"] == values.get("resources", {})
    # the ServiceAccount may read nodes, nothing else, and only the init container has a token
    role = one(docs, "ClusterRole", s.fullname)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    assert pod["serviceAccountName"] == s.fullname and pod["automountServiceAccountToken"] is False
    token_mounts = [c["name"] for _, c in all_containers([sts])
                    for m in c.get("volumeMounts", []) if m["name"] == "kube-api-access"]
    assert token_mounts == ["get-external-ip"]


def test_user_affinity_replaces_default_anti_affinity(helm, yaml, tmp_path):
    custom = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"topologyKey": "zone",
                                          "labelSelector": {"matchLabels": {"a": "b"}}}}]}}
    run, docs = render_standalone(helm, yaml, *BASE_SETS, values={"affinity": custom}, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert one(docs, "StatefulSet")["spec"]["template"]["spec"]["affinity"] == custom


COMMAND_EXPECTATIONS = {
    # scenario: (options beyond -I/-M/-u/--instance, multi-SFT files present)
    "umbrella-crt": ({"-s": ["/secrets/sftTokenSecret.txt"], "-a": [True], "--dataplane": ["auto"],
                      "--media-ports": ["32768-61000"], "--drain-timeout": ["3570"],
                      "--log-format": ["text"], "-A": ["203.0.113.7"]}, None),
    "umbrella-multisft": ({"-t": ["turn:turn.wire.example.com:3478?transport=udp"],
                           "-s": ["/secrets/zrest_secret.txt"], "--dataplane": ["auto"],
                           "--media-ports": ["32768-61000"], "--drain-timeout": ["8"],
                           "--log-format": ["text"]}, None),
    "standalone-issuer": ({"-O": ["eth0,eth1"], "--dataplane": ["kernel"],
                           "--media-ports": ["40000-50000"], "--drain-timeout": ["590"],
                           "--log-format": ["json"], "-A": ["198.51.100.20"],
                           "-w": ["4"], "-k": ["2000"]}, None),
    "standalone-userspace": ({"--dataplane": ["userspace"], "--media-ports": ["32768-61000"],
                              "--drain-timeout": ["8"], "--log-format": ["text"],
                              "-A": ["2001:db8::5"], "-t": ["turns:turn.example.net:5349"],
                              "-x": ["user-1"], "-c": ["pass word"]},
                             {"turn_server": "turns:turn.example.net:5349", "username": "user-1",
                              "password": "pass word"}),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_sftd_command_line_built_from_values(render, yaml, tmp_path, name):
    s = SCENARIOS[name]
    values = values_of(yaml, s)
    sts = one(render(name), "StatefulSet", s.fullname)
    pod = {"ip": "10.1.2.3", "name": f"{s.fullname}-1", "namespace": s.namespace}
    expected, multi_sft = COMMAND_EXPECTATIONS[name]
    argv = run_sftd_command(sftd_container(sts), tmp_path, pod, s.external_ip, multi_sft)
    assert parse_argv(argv) == {
        "-I": ["10.1.2.3"], "-M": ["10.1.2.3"],
        "-u": [f"https://{values['host']}/sfts/{s.fullname}-1"],
        "--instance": [f"{s.namespace}.{s.fullname}-1"],
        **expected,
    }


def test_sftd_secret_files_match_the_command_line(render, yaml):
    for name, key in (("umbrella-crt", "sftTokenSecret.txt"), ("umbrella-multisft", "zrest_secret.txt")):
        s = SCENARIOS[name]
        values = values_of(yaml, s)
        docs = render(name)
        sts = one(docs, "StatefulSet", s.fullname)
        c = sftd_container(sts)
        assert f"/secrets/{key}" in c["args"]
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/secrets")
        vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        secret = one(docs, "Secret", vol["secret"]["secretName"])
        want = values["sftTokenSecret"] if key == "sftTokenSecret.txt" else values["multiSFT"]["secret"]
        assert base64.b64decode(secret["data"][key]).decode() == want


def test_no_external_ip_means_no_advertised_address(render, tmp_path):
    s = SCENARIOS["umbrella-multisft"]
    sts = one(render("umbrella-multisft"), "StatefulSet", s.fullname)
    argv = run_sftd_command(sftd_container(sts), tmp_path,
                            {"ip": "10.0.0.9", "name": "prod-sftd-0", "namespace": "calling"}, "")
    assert "-A" not in argv


def test_turn_discovery_renders_no_t(helm, yaml, tmp_path):
    """Wire's turnDiscoveryEnabled adds sftd -T there; this sftd refuses -T, so a
    pod rendered with it would never start. The value is accepted and ignored."""
    from sftd.signalling.cli import build_parser

    run, docs = render_standalone(helm, yaml, *BASE_SETS, "turnDiscoveryEnabled=true")
    assert run.returncode == 0, run.stderr
    argv = run_sftd_command(sftd_container(one(docs, "StatefulSet")), tmp_path,
                            {"ip": "10.0.0.9", "name": "sftd-0", "namespace": "default"}, "")
    assert "-T" not in argv
    assert build_parser().parse_args(argv).use_turn is False  # what sftd's main() refuses


@pytest.mark.parametrize("name", SCENARIOS)
def test_probes_and_ports(render, name):
    c = sftd_container(one(render(name), "StatefulSet", SCENARIOS[name].fullname))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"sft": 8585, "metrics": 49090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("name", SCENARIOS)
def test_least_privilege(render, yaml, name):
    s = SCENARIOS[name]
    docs = render(name)
    sts = one(docs, "StatefulSet", s.fullname)
    c = sftd_container(sts)
    sc = c["securityContext"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["allowPrivilegeEscalation"] is False
    if values_of(yaml, s).get("dataplane", "auto") == "userspace":
        assert "add" not in sc["capabilities"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 31337
        assert "bpffs" not in volumes and "/sys/fs/bpf" not in mounts
    else:
        assert sorted(sc["capabilities"]["add"]) == ["BPF", "NET_ADMIN", "PERFMON"]
        assert volumes["bpffs"]["hostPath"] == {"path": "/sys/fs/bpf", "type": "Directory"}
        assert mounts["/sys/fs/bpf"]["name"] == "bpffs"
    for _workload, container in all_containers(docs):
        csc = container.get("securityContext", {})
        assert not csc.get("privileged"), container["name"]
        assert "SYS_ADMIN" not in csc.get("capabilities", {}).get("add", [])
        if container["name"] != "sftd":
            assert csc["runAsNonRoot"] is True and csc["capabilities"]["drop"] == ["ALL"]


# --- draining --------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_prestop_sleep_and_drain_below_grace_period(render, name):
    docs = render(name)
    for workload, c in all_containers(docs):
        pre_stop = c.get("lifecycle", {}).get("preStop")
        assert pre_stop is None or "sleep" not in json.dumps(pre_stop), (workload["kind"], c["name"])
    sts = one(docs, "StatefulSet", SCENARIOS[name].fullname)
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    args = sftd_container(sts)["args"]
    drain = int(args[args.index("--drain-timeout") + 1])
    assert 0 < drain < grace


@pytest.mark.parametrize("grace", [3, 10, 45, 600, 3600, 86400])
def test_default_drain_timeout_leaves_time_to_exit(helm, yaml, grace):
    run, docs = render_standalone(helm, yaml, *BASE_SETS, f"terminationGracePeriodSeconds={grace}")
    assert run.returncode == 0, run.stderr
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    args = sftd_container(sts)["args"]
    drain = int(args[args.index("--drain-timeout") + 1])
    assert 2 <= grace - drain <= 30 and drain >= 1


# --- URL routing -----------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_ingress_routes_and_tls(render, yaml, name):
    s = SCENARIOS[name]
    values = values_of(yaml, s)
    docs = render(name)
    ing = one(docs, "Ingress", s.fullname)
    assert ing["spec"]["ingressClassName"] == "nginx"
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/enable-cors"] == "true"
    assert ann["nginx.ingress.kubernetes.io/cors-allow-origin"] == values["allowOrigin"]
    assert ing["spec"]["tls"] == [{"hosts": [values["host"]], "secretName": s.fullname}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == values["host"]
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    assert set(paths) == {"/sft/", "/sfts/", "/sft_servers_all.json"}
    assert paths["/sft/"]["pathType"] == "Prefix" and paths["/sfts/"]["pathType"] == "Prefix"
    assert paths["/sft_servers_all.json"]["pathType"] == "Exact"

    sts = one(docs, "StatefulSet", s.fullname)
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    # /sft/ -> a Service of the sftd pods that drops draining/not-ready pods
    sft_backend = paths["/sft/"]["backend"]["service"]
    ready = one(docs, "Service", sft_backend["name"])
    assert selects(ready["spec"]["selector"], pod_labels)
    assert not ready["spec"].get("publishNotReadyAddresses", False)
    assert sft_backend["port"]["name"] in {p["name"] for p in ready["spec"]["ports"]}
    assert {p["name"]: p["port"] for p in ready["spec"]["ports"]}["sft"] == 8585
    # /sfts/ and the list -> join-call
    join = one(docs, "Deployment", f"{s.fullname}-join-call")
    nginx = next(c for c in join["spec"]["template"]["spec"]["containers"] if c["name"] == "nginx")
    for path in ("/sfts/", "/sft_servers_all.json"):
        backend = paths[path]["backend"]["service"]
        svc = one(docs, "Service", backend["name"])
        assert selects(svc["spec"]["selector"], join["spec"]["template"]["metadata"]["labels"])
        port = next(p for p in svc["spec"]["ports"] if p["name"] == backend["port"]["name"])
        assert port["targetPort"] in {p["name"] for p in nginx["ports"]}
    # the TLS secret comes from the values or from cert-manager
    tls = values["tls"]
    if "issuerRef" in tls:
        cert = one(docs, "Certificate", s.fullname)
        assert cert["spec"]["secretName"] == s.fullname
        assert cert["spec"]["dnsNames"] == [values["host"]]
        assert cert["spec"]["issuerRef"] == tls["issuerRef"]
        assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == s.fullname]
    else:
        secret = one(docs, "Secret", s.fullname)
        assert secret["type"] == "kubernetes.io/tls"
        assert base64.b64decode(secret["data"]["tls.crt"]).decode() == tls["crt"]
        assert base64.b64decode(secret["data"]["tls.key"]).decode() == tls["key"]


def nginx_route(conf: str, uri: str) -> str | None:
    """Where the join-call nginx sends `uri`, reading its regex location (PCRE
    syntax that Python's re shares for these patterns) and proxy_pass."""
    m = re.search(r'location ~ "([^"]+)" \{\s*proxy_pass ([^;]+);', conf)
    assert m, conf
    match = re.match(m.group(1), uri)
    if not match:
        return None
    target = m.group(2).replace("$is_args$args", "")
    return re.sub(r"\$(\d)", lambda g: match.group(int(g.group(1))), target)


@pytest.mark.parametrize("name", SCENARIOS)
def test_join_call_proxies_to_the_named_pod(render, name):
    s = SCENARIOS[name]
    docs = render(name)
    conf = one(docs, "ConfigMap", f"{s.fullname}-join-call")["data"]["nginx.conf"]
    sts = one(docs, "StatefulSet", s.fullname)
    svc = sts["spec"]["serviceName"]
    convid = "0123456789abcdef0123456789abcdef"
    assert nginx_route(conf, f"/sfts/{s.fullname}-2/sft/{convid}") == \
        f"http://{s.fullname}-2.{svc}.{s.namespace}.svc.cluster.local:8585/sft/{convid}"
    assert nginx_route(conf, f"/sfts/{s.fullname}-0/sft/url") == \
        f"http://{s.fullname}-0.{svc}.{s.namespace}.svc.cluster.local:8585/sft/url"
    # nothing outside this StatefulSet's pods
    assert nginx_route(conf, "/sfts/kube-apiserver/sft/x") is None
    assert nginx_route(conf, f"/sfts/{s.fullname}-1.evil.example/sft/x") is None
    assert "location = /sft_servers_all.json" in conf


@pytest.mark.parametrize("name", SCENARIOS)
def test_discovery_lists_ready_pods_and_nginx_serves_its_file(render, name):
    s = SCENARIOS[name]
    docs = render(name)
    join = one(docs, "Deployment", f"{s.fullname}-join-call")
    pod = join["spec"]["template"]["spec"]
    disco = next(c for c in pod["containers"] if c["name"] == "sftd-disco")
    nginx = next(c for c in pod["containers"] if c["name"] == "nginx")
    cmd = disco["command"]
    service = cmd[cmd.index("--service") + 1]
    ready = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert service == f"{ready}.{s.namespace}.svc.cluster.local."
    out = Path(cmd[cmd.index("--out") + 1])
    assert out.name == "sft_servers_all.json"
    disco_vol = next(m["name"] for m in disco["volumeMounts"] if m["mountPath"] == str(out.parent))
    nginx_mount = next(m for m in nginx["volumeMounts"] if m["name"] == disco_vol)
    conf = one(docs, "ConfigMap", f"{s.fullname}-join-call")["data"]["nginx.conf"]
    root = re.search(r"location = /sft_servers_all.json \{\s*root ([^;]+);", conf).group(1)
    assert root == nginx_mount["mountPath"]
    # the scripts the containers run are the chart's files
    scripts = one(docs, "ConfigMap", f"{s.fullname}-scripts")["data"]
    for f in ("sftd-disco.py", "external-ip.py", "multi-sft-config.py"):
        assert scripts[f] == (CHART / "files" / f).read_text()


# --- monitoring ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["umbrella-crt", "standalone-issuer"])
def test_service_monitor_scrapes_each_pod_once(render, name):
    s = SCENARIOS[name]
    docs = render(name)
    sm = one(docs, "ServiceMonitor", s.fullname)
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    matched = [d for d in docs if d["kind"] == "Service"
               and selects(sm["spec"]["selector"]["matchLabels"], d["metadata"]["labels"])]
    assert [d["metadata"]["name"] for d in matched] == [s.fullname]
    assert "metrics" in {p["name"] for p in matched[0]["spec"]["ports"]}


def test_prometheus_rule_is_the_deploy_rules_file(render, yaml):
    docs = render("standalone-issuer")
    rule = one(docs, "PrometheusRule", "sftd")
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "sftd"
    deploy = yaml.safe_load((REPO / "deploy/prometheus/sftd-alerts.yaml").read_text())
    assert rule["spec"] == deploy
    exprs = {r["alert"]: r["expr"] for g in deploy["groups"] for r in g["rules"]}
    assert "sft_capacity_participants_remaining" in exprs["SftdNearCapacity"]
    assert 'counter="DROP_AUTH"' in exprs["SftdSrtpAuthFailuresRising"]
    assert "sft_draining" in exprs["SftdDraining"]
    assert not [d for d in render("umbrella-crt") if d["kind"] == "PrometheusRule"]


# --- values that must fail -------------------------------------------------------


@pytest.mark.parametrize("sets, message", [
    (("allowOrigin=https://a.example", "tls.crt=C", "tls.key=K"), "Must specify host"),
    (("host=h.example", "tls.crt=C", "tls.key=K"), "Must specify allowOrigin"),
    (("host=h.example", "allowOrigin=https://a.example"), "must specify tls.key and tls.crt, or tls.issuerRef"),
    ((*BASE_SETS, "tls.issuerRef.name=x"), "mutually exclusive"),
    ((*BASE_SETS, "terminationGracePeriodSeconds=60", "drainTimeoutSeconds=60"),
     "must be smaller than terminationGracePeriodSeconds"),
    ((*BASE_SETS, "multiSFT.enabled=true", "sftTokenSecret=x"), "please set the secret at multiSFT.secret"),
    ((*BASE_SETS, "multiSFT.enabled=true", "multiSFT.discoveryRequired=false",
      "multiSFT.turnServerURI=turn:t"), "must specify authentication secret"),
    ((*BASE_SETS, "multiSFT.enabled=true", "multiSFT.discoveryRequired=false", "multiSFT.secret=s"),
     "must specify TURN server URI"),
    ((*BASE_SETS, "multiSFT.enabled=true"), "multiSFT.turnDiscoveryURL"),
    ((*BASE_SETS, "dataplane=xdp"), "dataplane"),
    ((*BASE_SETS, "mediaPorts=5000"), "mediaPorts"),
    ((*BASE_SETS, "mediaPorts=61000-32768"), "mediaPorts"),
    ((*BASE_SETS, "dataplane=userspace", "securityContext.runAsUser=0"), "must not be 0"),
    ((*BASE_SETS, "coredumps.enabled=true"), "coredumps.storageClassName is required"),
])
def test_invalid_values_fail(helm, yaml, sets, message):
    run, _ = render_standalone(helm, yaml, *sets)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr


def test_minimal_values_render(helm, yaml):
    run, docs = render_standalone(helm, yaml, *BASE_SETS)
    assert run.returncode == 0, run.stderr
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret",
                                         "ConfigMap", "Service", "Deployment", "StatefulSet", "Ingress"}


# --- compatibility with Wire's chart -------------------------------------------------

# Every value of Wire's charts/sftd (wireapp/wire-avs-service) with its default;
# None where Wire's values.yaml leaves it unset or only commented.
WIRE_VALUES = {
    "replicaCount": 1,
    "image.repository": "quay.io/wire/sftd",
    "image.pullPolicy": "IfNotPresent",
    "image.tag": "",
    "config.ingressClass": "nginx",
    "imagePullSecrets": [],
    "nameOverride": "",
    "fullnameOverride": "",
    "metrics.serviceMonitor.enabled": False,
    "terminationGracePeriodSeconds": 10,
    "podAnnotations": {},
    "podSecurityContext.fsGroup": 31337,
    "securityContext.runAsUser": 31337,
    "resources": {},
    "nodeSelector": {},
    "tolerations": [],
    "affinity": {},
    "tls": {},
    "joinCall.replicaCount": 3,
    "joinCall.image.repository": "nginxinc/nginx-unprivileged",
    "joinCall.image.pullPolicy": "IfNotPresent",
    "joinCall.image.tag": "1.25.3",
    "turnDiscoveryEnabled": False,
    "multiSFT.enabled": False,
    "multiSFT.turnDiscoveryURL": "",
    "multiSFT.discoveryRequired": True,
    "multiSFT.secret": None,
    "multiSFT.turnServerURI": None,
    "sftTokenSecret": None,
    "coredumps.enabled": False,
    "coredumps.storageSize": "10Gi",
    "additionalCmdArgs": "",
}
# Our one deliberate difference: the default image must be this project's.
DIFFERENT_DEFAULTS = {"image.repository"}


def test_values_keep_wire_names_and_defaults(yaml):
    ours = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, default in WIRE_VALUES.items():
        node = ours
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"{path} missing from values.yaml"
            node = node[part]
        if path not in DIFFERENT_DEFAULTS:
            assert node == default, path
    assert ours["dataplane"] == "auto" and ours["mediaPorts"] == "32768-61000" and ours["interfaces"] == []


def test_wire_values_file_renders_unchanged(helm, yaml, tmp_path):
    """A values file written for Wire's chart, using all its keys, renders here."""
    values = {
        "replicaCount": 2, "image": {"repository": "registry.example/sftd", "tag": "1.2.3",
                                     "pullPolicy": "Always"},
        "config": {"ingressClass": "internal-nginx"}, "imagePullSecrets": [{"name": "regcred"}],
        "nameOverride": "", "fullnameOverride": "calling-sft", "metrics": {"serviceMonitor": {"enabled": True}},
        "terminationGracePeriodSeconds": 7200, "podAnnotations": {"a": "b"},
        "podSecurityContext": {"fsGroup": 31337}, "securityContext": {"runAsUser": 31337},
        "resources": {"limits": {"memory": "2Gi"}}, "nodeSelector": {"wire.com/role": "sftd"},
        "tolerations": [], "affinity": {}, "allowOrigin": "https://webapp.example", "host": "sftd.example",
        "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
        "joinCall": {"replicaCount": 2, "image": {"repository": "nginxinc/nginx-unprivileged",
                                                   "pullPolicy": "IfNotPresent", "tag": "1.25.3"}},
        "turnDiscoveryEnabled": True,
        "multiSFT": {"enabled": False, "turnDiscoveryURL": "", "discoveryRequired": True,
                     "secret": None, "turnServerURI": None},
        "sftTokenSecret": "tok", "coredumps": {"enabled": True, "storageClassName": "fast",
                                               "storageSize": "5Gi"},
        "additionalCmdArgs": "-q",
    }
    run, docs = render_standalone(helm, yaml, values=values, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    sts = one(docs, "StatefulSet", "calling-sft")
    c = sftd_container(sts)
    assert c["image"] == "registry.example/sftd:1.2.3" and c["imagePullPolicy"] == "Always"
    assert sts["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    assert one(docs, "Ingress")["spec"]["ingressClassName"] == "internal-nginx"
    assert "exec sftd \"$@\" -q" in c["command"][2] and "ulimit -c unlimited" in c["command"][2]
    assert "-T" not in c["args"] and "-a" in c["args"]  # -T: see test_turn_discovery_renders_no_t
