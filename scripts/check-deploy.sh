#!/usr/bin/env bash
# Offline checks of the deployment artifacts: Dockerfile, Kubernetes
# (Kustomize base + production overlay), Flux CD, the SOPS secret, the Chef
# cookbook and the CloudFormation template. Real tools where they exist
# (kubectl kustomize, kubernetes-validate, yamllint, cfn-lint, Ruby's ERB,
# systemd-analyze), plus checks of what they cannot know: that manifests,
# unit and config agree with what the sqsaga binary reads and serves.
#
# Runs on a fresh machine: it installs its Python tools into .venv and Ruby
# and kubectl (Debian's kubernetes-client, for `kubectl kustomize`) with
# apt-get when missing. Needs
# python3 and systemd-analyze.
#
#   scripts/check-deploy.sh            # all checks
#   SQSAGA_BIN=path/to/sqsaga scripts/check-deploy.sh
#
# Prints `ok   <check>` or `FAIL <check>: <reason>` per check (`skip` for a
# check whose tool is not there, e.g. no sqsaga binary built yet), then
# `N passed, M failed`; exits non-zero if anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# Tool versions, checked to exist on PyPI with `pip index versions`.
YAMLLINT_VERSION=1.38.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CFN_LINT_VERSION=1.58.0
# Kubernetes versions to validate against: EKS's oldest standard-support
# minor at the time of writing, and the newest schema kubernetes-validate has.
KUBERNETES_VERSIONS=(1.31.0 1.37.0)

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
WORK=$(mktemp -d)
trap '[ -n "${KEEP_WORK:-}" ] && echo "work dir: $WORK" >&2 || rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { printf 'ok   %s\n' "$1"; passed=$((passed + 1)); }
fail() {
    local reason
    reason=$(printf '%s' "$2" | tr '\n' ' ' | sed 's/  */ /g; s/ $//' | cut -c1-600)
    printf 'FAIL %s: %s\n' "$1" "$reason"
    failed=$((failed + 1))
}
skip() { printf 'skip %s: %s\n' "$1" "$2"; }

# Reads `ok<TAB>name` / `FAIL<TAB>name<TAB>reason` lines (from the Python and
# Ruby helpers below) and reports them.
report() {
    local status name reason
    while IFS=$'\t' read -r status name reason; do
        case "$status" in
            ok) ok "$name" ;;
            FAIL) fail "$name" "$reason" ;;
            skip) skip "$name" "$reason" ;;
            "") ;;
            *) fail "internal" "unexpected helper output: $status $name $reason" ;;
        esac
    done
    return 0
}

# pycheck WHAT ARGS...: runs a command of the Python helper; a crash is a FAIL.
pycheck() {
    local what=$1
    if "$PY" "$WORK/checks.py" "$@" >"$WORK/py.out" 2>"$WORK/py.err"; then
        report <"$WORK/py.out"
    else
        report <"$WORK/py.out"
        fail "$what (helper crashed)" "$(tail -c 1200 "$WORK/py.err")"
    fi
}

# run_tool NAME CMD...: ok if CMD exits 0, else FAIL with its output.
run_tool() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then
        ok "$name"
    else
        fail "$name" "$(head -c 2000 "$WORK/out")"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_updated=false
apt_install() {
    if ! command -v apt-get >/dev/null; then return 1; fi
    if [ "$apt_updated" = false ]; then
        as_root apt-get update -qq >>"$WORK/apt.log" 2>&1 || return 1
        apt_updated=true
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
install_python_tools() {
    if [ ! -x "$PY" ]; then
        if ! python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
            # Debian's python3 ships venv separately.
            apt_install python3-venv || return 1
            python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1 || return 1
        fi
    fi
    if ! "$PY" - "$YAMLLINT_VERSION" "$KUBERNETES_VALIDATE_VERSION" "$CFN_LINT_VERSION" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
wanted = dict(zip(["yamllint", "kubernetes-validate", "cfn-lint"], sys.argv[1:]))
sys.exit(0 if all(version(n) == v for n, v in wanted.items()) else 1)
EOF
        "$VENV/bin/pip" install -q --disable-pip-version-check \
            "yamllint==$YAMLLINT_VERSION" \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
            "cfn-lint==$CFN_LINT_VERSION" >"$WORK/pip.log" 2>&1 || return 1
    fi
}

if install_python_tools; then
    ok "tools: .venv with yamllint $YAMLLINT_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION, cfn-lint $CFN_LINT_VERSION"
    have_py=true
else
    fail "tools: .venv" "could not create .venv or pip install the pinned tools: $(tail -c 600 "$WORK"/*.log 2>/dev/null)"
    have_py=false
fi

if ! command -v ruby >/dev/null; then
    apt_install ruby || true
fi
if command -v ruby >/dev/null; then
    ok "tools: ruby $(ruby -e 'print RUBY_VERSION')"
    have_ruby=true
else
    fail "tools: ruby" "ruby is missing and apt-get install ruby failed: $(tail -c 400 "$WORK/apt.log" 2>/dev/null)"
    have_ruby=false
fi

# kubectl renders the overlays (`kubectl kustomize`): Debian ships it as
# kubernetes-client.
if ! command -v kubectl >/dev/null; then
    apt_install kubernetes-client || true
fi
have_kubectl=false
if command -v kubectl >/dev/null; then have_kubectl=true; fi

# The sqsaga binary, when one is built.
SQSAGA_BIN=${SQSAGA_BIN:-}
if [ -z "$SQSAGA_BIN" ]; then
    for candidate in target/release/sqsaga target/debug/sqsaga; do
        if [ -x "$candidate" ]; then SQSAGA_BIN="$ROOT/$candidate"; break; fi
    done
fi
if [ -n "$SQSAGA_BIN" ] && [ ! -x "$SQSAGA_BIN" ]; then
    fail "tools: sqsaga binary" "SQSAGA_BIN=$SQSAGA_BIN is not an executable"
    SQSAGA_BIN=""
fi

# ---------------------------------------------------------------------------
# Python helper: the checks that read manifests, Dockerfile, SOPS and
# CloudFormation files. Prints ok/FAIL lines for `report`.
# ---------------------------------------------------------------------------
cat >"$WORK/checks.py" <<'PYEOF'
"""Semantic checks of sqsaga's deployment files (see scripts/check-deploy.sh)."""
import glob
import os
import re
import sys

import yaml

# What the binary reads: the only variable names manifests may set. These
# are the issue's lists; load_spec() replaces them with the binary's own
# table (crates/config/src/spec.rs) once it exists.
ALLOWED_ENV = {
    "SQS_QUEUE_URL", "REGION", "LOG_LEVEL", "SQSAGA_CONFIG", "SQSAGA_BACKEND",
    "SQSAGA_DATA_DIR", "SQSAGA_HTTP_ADDR", "SQSAGA_SERVICE", "SQSAGA_INSTANCE_ID",
    "SQSAGA_CONCURRENCY", "SQSAGA_VISIBILITY_TIMEOUT", "SQSAGA_WAIT_TIME",
    "SQSAGA_DRAIN_TIMEOUT", "SQSAGA_DLQ_URL", "SQSAGA_ORCHESTRATOR_QUEUE_URL",
    "SQSAGA_QUEUE_PREFIX", "SQSAGA_TABLE", "SQSAGA_DEFINITIONS", "SQSAGA_FLEET_POLICY",
    "SQSAGA_HEARTBEAT_INTERVAL", "SQSAGA_SIGNING_KEY", "SQSAGA_SIGNING_KEY_PREVIOUS",
    "SQSAGA_REQUIRE_SIGNATURE", "OTEL_EXPORTER_OTLP_ENDPOINT", "AWS_REGION",
    "AWS_ENDPOINT_URL",
}
DURATION_ENV = {"SQSAGA_VISIBILITY_TIMEOUT", "SQSAGA_WAIT_TIME", "SQSAGA_DRAIN_TIMEOUT",
                "SQSAGA_HEARTBEAT_INTERVAL"}
# Keys of the JSON config file (the Chef path).
CONFIG_KEYS = {
    "queue_url", "dlq_url", "region", "log_level", "backend", "data_dir", "http_addr",
    "service", "concurrency", "visibility_timeout", "wait_time", "drain_timeout",
    "orchestrator_queue_url", "queue_prefix", "table", "definitions", "fleet_policy",
    "heartbeat_interval", "signing_key", "signing_key_previous", "require_signature",
    "otlp_endpoint",
}
# Current API versions only.
API_VERSIONS = {
    "Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1", "Secret": "v1",
    "Service": "v1", "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1", "TriggerAuthentication": "keda.sh/v1alpha1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "GitRepository": "source.toolkit.fluxcd.io/v1", "HelmRepository": "source.toolkit.fluxcd.io/v1",
    "Kustomization": "kustomize.toolkit.fluxcd.io/v1", "HelmRelease": "helm.toolkit.fluxcd.io/v2",
    "ImageRepository": "image.toolkit.fluxcd.io/v1", "ImagePolicy": "image.toolkit.fluxcd.io/v1",
    "ImageUpdateAutomation": "image.toolkit.fluxcd.io/v1",
    "Alert": "notification.toolkit.fluxcd.io/v1beta3", "Provider": "notification.toolkit.fluxcd.io/v1beta3",
}
HTTP_PORT = 8080
SPEC_SOURCE = "the issue's list"


def load_spec(path="crates/config/src/spec.rs"):
    """Variable names and config keys from the binary's settings table."""
    global ALLOWED_ENV, CONFIG_KEYS, SPEC_SOURCE
    try:
        text = open(path).read()
    except OSError:
        return
    env = set(re.findall(r'\benv:\s*"([A-Z0-9_]+)"', text))
    for group in re.findall(r'env_fallbacks:\s*&\[([^\]]*)\]', text):
        env |= set(re.findall(r'"([A-Z0-9_]+)"', group))
    sdk = re.search(r'AWS_SDK_ENV_VARS[^=]*=\s*&\[(.*?)\];', text, re.S)
    if sdk:
        env |= set(re.findall(r'"([A-Z0-9_]+)"', sdk.group(1)))
    config_env = re.search(r'CONFIG_ENV:\s*&str\s*=\s*"([A-Z0-9_]+)"', text)
    if config_env:
        env.add(config_env.group(1))
    keys = set(re.findall(r'\bkey:\s*"([a-z0-9_]+)"', text))
    if len(env) >= 10 and len(keys) >= 10:
        ALLOWED_ENV, CONFIG_KEYS, SPEC_SOURCE = env, keys, path


ENC_RE = re.compile(r"^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]$")
SECRET_NAME_RE = re.compile(r"(SECRET|PASSW|TOKEN|KEY|CREDENTIAL|PRIVATE|SIGNING)", re.I)


def emit(name, problems):
    if problems:
        shown = "; ".join(problems[:6])
        if len(problems) > 6:
            shown += f"; (+{len(problems) - 6} more)"
        print(f"FAIL\t{name}\t{shown}")
    else:
        print(f"ok\t{name}")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def parse_duration(text):
    """Seconds in `1m30s`-style text (units ms, s, m, h, d), as the binary reads it."""
    text = str(text).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def kn(doc):
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


# ----------------------------------------------------------------------------
# Rendered Kubernetes manifests
# ----------------------------------------------------------------------------
class Rendered:
    def __init__(self, docs):
        self.docs = docs
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d.get("kind"), []).append(d)

    def of(self, kind):
        return self.by_kind.get(kind, [])

    def named(self, kind, name):
        for d in self.of(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def pod_spec(self, dep):
        return dep.get("spec", {}).get("template", {}).get("spec", {})

    def pod_labels(self, dep):
        return dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}

    def container_env(self, container):
        """Variable name -> value (None for valueFrom), as the container sees it, and problems."""
        env, problems = {}, []
        for src in container.get("envFrom", []) or []:
            if "configMapRef" in src:
                name = src["configMapRef"]["name"]
                cm = self.named("ConfigMap", name)
                if cm is None:
                    problems.append(f"envFrom ConfigMap {name} is not in the rendered output")
                    continue
                env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
            elif "secretRef" in src:
                name = src["secretRef"]["name"]
                sec = self.named("Secret", name)
                if sec is None:
                    problems.append(f"envFrom Secret {name} is not in the rendered output")
                    continue
                for section in ("data", "stringData"):
                    env.update({k: None for k in (sec.get(section) or {})})
        for e in container.get("env", []) or []:
            env[e["name"]] = e.get("value") if "value" in e else None
        return env, problems


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_manifests(r):
    """[(check name, problems)] for one rendered manifest stream."""
    results = []
    deps = r.of("Deployment")
    scaled = {}
    for so in r.of("ScaledObject"):
        scaled.setdefault(so.get("spec", {}).get("scaleTargetRef", {}).get("name"), []).append(so)

    # api versions
    problems = []
    for d in r.docs:
        want = API_VERSIONS.get(d.get("kind"))
        if want is None:
            problems.append(f"{kn(d)}: kind not expected in sqsaga's manifests")
        elif d.get("apiVersion") != want:
            problems.append(f"{kn(d)}: apiVersion {d.get('apiVersion')} (current: {want})")
    if not deps:
        problems.append("no Deployment rendered")
    results.append(("api versions are current", problems))

    # environment variable names and values
    problems = []
    envs = {}
    for dep in deps:
        for c in r.pod_spec(dep).get("containers", []):
            env, p = r.container_env(c)
            envs[(dep["metadata"]["name"], c["name"])] = env
            problems += [f"{kn(dep)}: {x}" for x in p]
            for name in sorted(env):
                if name not in ALLOWED_ENV:
                    problems.append(f"{kn(dep)}/{c['name']}: unknown variable {name} (not in {SPEC_SOURCE})")
            for name in sorted(DURATION_ENV & set(env)):
                if env[name] is not None:
                    try:
                        parse_duration(env[name])
                    except ValueError:
                        problems.append(f"{kn(dep)}: {name}={env[name]} is not a duration like 30s")
            addr = env.get("SQSAGA_HTTP_ADDR")
            if addr != f"0.0.0.0:{HTTP_PORT}":
                problems.append(f"{kn(dep)}: SQSAGA_HTTP_ADDR is {addr!r}, must be 0.0.0.0:{HTTP_PORT} (probes come from outside the pod)")
            if "SQS_QUEUE_URL" not in env:
                problems.append(f"{kn(dep)}: SQS_QUEUE_URL (its input queue) is not set")
            iid = [e for e in c.get("env", []) or [] if e["name"] == "SQSAGA_INSTANCE_ID"]
            if not iid or iid[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                problems.append(f"{kn(dep)}: SQSAGA_INSTANCE_ID must come from the pod name (fieldRef metadata.name)")
    results.append(("env names are the binary's", problems))

    # commands
    problems = []
    for dep in deps:
        for c in r.pod_spec(dep).get("containers", []):
            args = list(c.get("command", []) or []) + list(c.get("args", []) or [])
            env = envs[(dep["metadata"]["name"], c["name"])]
            if args[:1] == ["orchestrator"]:
                continue
            if len(args) >= 3 and args[0] == "worker" and args[1] == "--service":
                if env.get("SQSAGA_SERVICE") not in (None, args[2]):
                    problems.append(f"{kn(dep)}: --service {args[2]} but SQSAGA_SERVICE={env['SQSAGA_SERVICE']}")
                continue
            problems.append(f"{kn(dep)}: args {args} are neither `orchestrator` nor `worker --service NAME`")
    results.append(("container commands", problems))

    # probes and port
    problems = []
    for dep in deps:
        for c in r.pod_spec(dep).get("containers", []):
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
            if ports.get("metrics") != HTTP_PORT:
                problems.append(f"{kn(dep)}: no container port named metrics = {HTTP_PORT}")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                if get.get("path") != path:
                    problems.append(f"{kn(dep)}: {probe} path is {get.get('path')!r}, the binary serves {path}")
                if get.get("port") not in ("metrics", HTTP_PORT):
                    problems.append(f"{kn(dep)}: {probe} port is {get.get('port')!r}, expected metrics")
    results.append(("probes match /readyz, /healthz on port metrics", problems))

    # security context
    problems = []
    for dep in deps:
        pod = r.pod_spec(dep)
        psc = pod.get("securityContext") or {}
        for c in pod.get("containers", []):
            csc = c.get("securityContext") or {}
            eff = dict(psc)
            eff.update(csc)
            where = f"{kn(dep)}/{c['name']}"
            if eff.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if eff.get("runAsUser") != 65532:
                problems.append(f"{where}: runAsUser is {eff.get('runAsUser')}, expected 65532")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if (eff.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            vols = {v["name"]: v for v in pod.get("volumes", []) or []}
            tmp = [m for m in c.get("volumeMounts", []) or [] if m.get("mountPath") == "/tmp"]
            if not tmp or "emptyDir" not in vols.get(tmp[0]["name"], {}):
                problems.append(f"{where}: /tmp is not an emptyDir (the root fs is read-only)")
    results.append(("security context (non-root 65532, read-only root, no caps, seccomp)", problems))

    # resources
    problems = []
    for dep in deps:
        for c in r.pod_spec(dep).get("containers", []):
            res = c.get("resources") or {}
            for section, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for k in keys:
                    if k not in (res.get(section) or {}):
                        problems.append(f"{kn(dep)}: no resources.{section}.{k}")
    results.append(("resources", problems))

    # grace period > longest step timeout + drain budget
    problems = []
    longest, source = 0.0, None
    for cm in r.of("ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith((".yaml", ".yml")):
                continue
            try:
                d = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if not isinstance(d, dict) or not isinstance(d.get("steps"), list):
                continue
            default = (d.get("defaults") or {}).get("timeout")
            for step in d["steps"]:
                t = step.get("timeout", default)
                if t is None:
                    continue
                try:
                    secs = parse_duration(t)
                except ValueError:
                    problems.append(f"{cm['metadata']['name']}/{key}: step {step.get('name')} timeout {t!r} unreadable")
                    continue
                if secs > longest:
                    longest, source = secs, f"{key} step {step.get('name')}"
    if source is None:
        problems.append("no saga definition with steps found in the rendered ConfigMaps")
    for dep in deps:
        grace = r.pod_spec(dep).get("terminationGracePeriodSeconds", 30)
        for c in r.pod_spec(dep).get("containers", []):
            drain = envs[(dep["metadata"]["name"], c["name"])].get("SQSAGA_DRAIN_TIMEOUT")
            if drain is None:
                problems.append(f"{kn(dep)}: SQSAGA_DRAIN_TIMEOUT is not set")
                continue
            try:
                need = parse_duration(drain) + longest
            except ValueError:
                continue
            if not grace > need:
                problems.append(f"{kn(dep)}: terminationGracePeriodSeconds {grace} is not longer than "
                                f"drain {drain} + longest step {longest:g}s ({source})")
    results.append(("termination grace > longest step timeout + drain", problems))

    # KEDA scaling
    problems = []
    auths = {a["metadata"]["name"]: a for a in r.of("TriggerAuthentication")}
    for dep in deps:
        name = dep["metadata"]["name"]
        c0 = (r.pod_spec(dep).get("containers") or [{}])[0]
        is_worker = (list(c0.get("args", []) or [])[:1] == ["worker"])
        sos = scaled.get(name, [])
        if is_worker and len(sos) != 1:
            problems.append(f"{kn(dep)}: worker has {len(sos)} ScaledObjects, expected 1")
        if sos and "replicas" in dep.get("spec", {}):
            problems.append(f"{kn(dep)}: has replicas: {dep['spec']['replicas']} but is scaled by "
                            f"ScaledObject/{sos[0]['metadata']['name']} (Flux and KEDA would fight)")
    for so in r.of("ScaledObject"):
        spec = so.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        dep = r.named("Deployment", target)
        if dep is None:
            problems.append(f"{kn(so)}: target Deployment {target} not rendered")
            continue
        if int(spec.get("minReplicaCount", 0)) < 1:
            problems.append(f"{kn(so)}: minReplicaCount < 1 (a worker must stay up to heartbeat)")
        sqs = [t for t in spec.get("triggers", []) if t.get("type") == "aws-sqs-queue"]
        if not sqs:
            problems.append(f"{kn(so)}: no aws-sqs-queue trigger")
        c0 = r.pod_spec(dep)["containers"][0]
        env = envs.get((target, c0["name"]), {})
        for t in sqs:
            md = t.get("metadata", {})
            for k in ("queueURL", "queueLength", "awsRegion"):
                if k not in md:
                    problems.append(f"{kn(so)}: trigger metadata lacks {k}")
            if md.get("queueURL") != env.get("SQS_QUEUE_URL"):
                problems.append(f"{kn(so)}: queueURL {md.get('queueURL')} is not the worker's SQS_QUEUE_URL {env.get('SQS_QUEUE_URL')}")
            if md.get("awsRegion") != env.get("REGION", env.get("AWS_REGION")):
                problems.append(f"{kn(so)}: awsRegion {md.get('awsRegion')} differs from the worker's REGION")
            ref = (t.get("authenticationRef") or {}).get("name")
            auth = auths.get(ref)
            if auth is None:
                problems.append(f"{kn(so)}: authenticationRef {ref!r} names no TriggerAuthentication")
            elif (auth.get("spec", {}).get("podIdentity") or {}).get("provider") != "aws":
                problems.append(f"TriggerAuthentication/{ref}: podIdentity.provider is not aws")
    results.append(("KEDA scaling (ScaledObject per worker, no replicas)", problems))

    # PodDisruptionBudget per Deployment
    problems = []
    for dep in deps:
        labels = r.pod_labels(dep)
        if not any(matches((p.get("spec", {}).get("selector") or {}).get("matchLabels"), labels)
                   for p in r.of("PodDisruptionBudget")):
            problems.append(f"{kn(dep)}: no PodDisruptionBudget selects its pods")
    results.append(("PodDisruptionBudget per component", problems))

    # metrics Service per Deployment
    problems = []
    for dep in deps:
        labels = r.pod_labels(dep)
        svcs = [s for s in r.of("Service") if matches(s.get("spec", {}).get("selector"), labels)]
        if not any(p.get("name") == "metrics" and p.get("targetPort") in ("metrics", HTTP_PORT)
                   for s in svcs for p in s["spec"].get("ports", [])):
            problems.append(f"{kn(dep)}: no Service with a port named metrics selects its pods")
    results.append(("metrics Service per component", problems))

    # IRSA service accounts
    problems = []
    seen = {}
    for dep in deps:
        sa_name = r.pod_spec(dep).get("serviceAccountName")
        if not sa_name:
            problems.append(f"{kn(dep)}: no serviceAccountName")
            continue
        if sa_name in seen:
            problems.append(f"{kn(dep)}: shares ServiceAccount {sa_name} with {seen[sa_name]}")
        seen[sa_name] = kn(dep)
        sa = r.named("ServiceAccount", sa_name)
        if sa is None:
            problems.append(f"{kn(dep)}: ServiceAccount {sa_name} not rendered")
            continue
        arn = (sa["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn", "")
        if not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$", arn):
            problems.append(f"ServiceAccount/{sa_name}: eks.amazonaws.com/role-arn {arn!r} is not a role ARN")
    results.append(("IRSA ServiceAccount per component", problems))

    # generated (hashed) ConfigMaps, so a change rolls the pods
    problems = []
    for dep in deps:
        pod = r.pod_spec(dep)
        names = [v["configMap"]["name"] for v in pod.get("volumes", []) or [] if "configMap" in v]
        for c in pod.get("containers", []):
            names += [s["configMapRef"]["name"] for s in c.get("envFrom", []) or [] if "configMapRef" in s]
        for n in names:
            if r.named("ConfigMap", n) is None:
                problems.append(f"{kn(dep)}: ConfigMap {n} not rendered")
            elif not re.search(r"-[a-z0-9]{10}$", n):
                problems.append(f"{kn(dep)}: ConfigMap {n} has no content hash (use configMapGenerator)")
    results.append(("config from configMapGenerator (hashed names)", problems))

    # images
    problems = []
    for dep in deps:
        for c in r.pod_spec(dep).get("containers", []):
            image = c.get("image", "")
            last = image.rsplit("/", 1)[-1]
            if "@sha256:" in image:
                continue
            if ":" not in last:
                problems.append(f"{kn(dep)}: image {image} has no tag (means latest)")
            elif last.rsplit(":", 1)[1] == "latest":
                problems.append(f"{kn(dep)}: image {image} uses the latest tag")
    results.append(("image tags pinned (no latest)", problems))

    # definitions and fleet policy mounted where the variables point
    problems = []
    orch = [d for d in deps
            if list((r.pod_spec(d).get("containers") or [{}])[0].get("args", []) or [])[:1] == ["orchestrator"]]
    if len(orch) != 1:
        problems.append(f"{len(orch)} orchestrator Deployments rendered, expected 1")
    for dep in orch:
        pod = r.pod_spec(dep)
        c = pod["containers"][0]
        env = envs[(dep["metadata"]["name"], c["name"])]
        vols = {v["name"]: v for v in pod.get("volumes", []) or []}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", []) or []}

        def cm_at(path):
            m = mounts.get(path)
            if m is None:
                return None
            cmref = vols.get(m["name"], {}).get("configMap")
            return r.named("ConfigMap", cmref["name"]) if cmref else None

        if env.get("SQSAGA_DEFINITIONS") != "/etc/sqsaga/definitions":
            problems.append(f"{kn(dep)}: SQSAGA_DEFINITIONS is {env.get('SQSAGA_DEFINITIONS')!r}, expected /etc/sqsaga/definitions")
        defs = cm_at("/etc/sqsaga/definitions")
        if defs is None or not any(k.endswith((".yaml", ".yml")) for k in defs.get("data") or {}):
            problems.append(f"{kn(dep)}: no ConfigMap with saga definitions mounted at /etc/sqsaga/definitions")
        fleet = env.get("SQSAGA_FLEET_POLICY")
        if not fleet:
            problems.append(f"{kn(dep)}: SQSAGA_FLEET_POLICY is not set")
        else:
            cm = cm_at(os.path.dirname(fleet))
            text = (cm or {}).get("data", {}).get(os.path.basename(fleet))
            if text is None:
                problems.append(f"{kn(dep)}: SQSAGA_FLEET_POLICY {fleet} is not a mounted ConfigMap key")
            else:
                services = (yaml.safe_load(text) or {}).get("services") or {}
                needed = set()
                for key, deftext in ((defs or {}).get("data") or {}).items():
                    d = yaml.safe_load(deftext) or {}
                    needed |= {s.get("service") for s in d.get("steps", []) if isinstance(s, dict)}
                for svc in sorted(needed - set(services)):
                    problems.append(f"fleet policy has no entry for service {svc}")
                for svc, pol in services.items():
                    if (pol or {}).get("mode") not in ("enforce", "observe", "off"):
                        problems.append(f"fleet policy {svc}: mode {(pol or {}).get('mode')!r}")
                    try:
                        parse_duration((pol or {}).get("rolloutWindow"))
                    except ValueError:
                        problems.append(f"fleet policy {svc}: rolloutWindow {(pol or {}).get('rolloutWindow')!r} is not a duration")
    results.append(("definitions and fleet policy mounted from Git", problems))
    return results


def cmd_manifests(path, label):
    r = Rendered(load_docs(path))
    for name, problems in check_manifests(r):
        emit(f"{label}: {name}", problems)


def cmd_bad_fixtures(directory):
    """Each negative fixture must fail exactly the check it was made for."""
    expected = {
        "unknown-env.yaml": "env names are the binary's",
        "wrong-probe-path.yaml": "probes match /readyz, /healthz on port metrics",
        "replicas-with-scaledobject.yaml": "KEDA scaling (ScaledObject per worker, no replicas)",
    }
    problems = []
    for fname, check in expected.items():
        path = os.path.join(directory, fname)
        if not os.path.exists(path):
            problems.append(f"{path} is missing")
            continue
        failing = {n for n, p in check_manifests(Rendered(load_docs(path))) if p}
        if failing != {check}:
            problems.append(f"{fname} fails {sorted(failing)}, expected exactly [{check!r}]")
    emit("negative fixtures (deploy/tests/bad) are rejected for their one fault", problems)


def cmd_builtin(src, dst):
    """Keeps the built-in kinds for kubernetes-validate; drops CRDs (keda.sh,
    *.fluxcd.io: the tool has no schema for them and only warns) and strips
    the `sops` metadata from SOPS-encrypted Secrets, as Flux does before
    applying them."""
    out = []
    for d in load_docs(src):
        group = d.get("apiVersion", "").rpartition("/")[0]
        if group and "." in group and not group.endswith(".k8s.io"):
            continue
        if d.get("kind") == "Secret":
            d = {k: v for k, v in d.items() if k != "sops"}
        out.append(d)
    with open(dst, "w") as f:
        yaml.safe_dump_all(out, f, sort_keys=False)
    print(len(out))


# ----------------------------------------------------------------------------
# Kustomization sources and Flux
# ----------------------------------------------------------------------------
DEPRECATED_KUSTOMIZE = ("commonLabels", "bases", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags")


def cmd_kustomize_sources(deploy):
    problems = []
    files = [f for f in glob.glob(os.path.join(deploy, "**", "kustomization.y*ml"), recursive=True)
             if "/tests/" not in f]
    for f in files:
        d = load_docs(f)[0]
        if d.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or d.get("kind") != "Kustomization":
            problems.append(f"{f}: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
        for field in DEPRECATED_KUSTOMIZE:
            if field in d:
                problems.append(f"{f}: deprecated field {field}")
        for img in d.get("images", []) or []:
            if str(img.get("newTag", "")) == "latest":
                problems.append(f"{f}: image {img.get('name')} newTag latest")
    prod = os.path.join(deploy, "k8s/overlays/production/kustomization.yaml")
    d = load_docs(prod)[0]
    imgs = d.get("images") or []
    if not imgs or any(not img.get("newTag") for img in imgs):
        problems.append(f"{prod}: every image needs a pinned newTag")
    if not re.search(r'newTag: *\S+ *# *\{"\$imagepolicy": *"[\w-]+:[\w-]+:tag"\}', open(prod).read()):
        problems.append(f"{prod}: the newTag line has no {{\"$imagepolicy\": \"ns:name:tag\"}} marker")
    if not files:
        problems.append("no kustomization.yaml under deploy/")
    emit("kustomization files use current fields, pinned images", problems)


def cmd_flux(root, cluster_dir, infra_rendered):
    docs = []
    for f in sorted(glob.glob(os.path.join(cluster_dir, "*.y*ml"))):
        docs += load_docs(f)
    docs += load_docs(infra_rendered)
    r = Rendered(docs)
    problems = []
    for d in docs:
        want = API_VERSIONS.get(d.get("kind"))
        if want is None or d.get("apiVersion") != want:
            problems.append(f"{kn(d)}: apiVersion {d.get('apiVersion')} (current: {want})")
    emit("flux: api versions are current", problems)

    problems = []
    gitrepos = {g["metadata"]["name"] for g in r.of("GitRepository")}
    kustomizations = {k["metadata"]["name"]: k for k in r.of("Kustomization")}
    for name, k in kustomizations.items():
        spec = k.get("spec", {})
        path = spec.get("path", "")
        if not os.path.isdir(os.path.join(root, path)):
            problems.append(f"Kustomization/{name}: path {path} does not exist in the repository")
        if spec.get("sourceRef", {}).get("name") not in gitrepos:
            problems.append(f"Kustomization/{name}: sourceRef names no GitRepository")
        for field in ("interval", "timeout"):
            if field not in spec:
                problems.append(f"Kustomization/{name}: no {field}")
        if spec.get("prune") is not True:
            problems.append(f"Kustomization/{name}: prune is not true")
        if spec.get("wait") is not True and not spec.get("healthChecks"):
            problems.append(f"Kustomization/{name}: neither wait: true nor healthChecks")
        for dep in spec.get("dependsOn", []) or []:
            if dep.get("name") not in kustomizations:
                problems.append(f"Kustomization/{name}: dependsOn {dep.get('name')} which does not exist")
    apps = [k for k in kustomizations.values()
            if k["spec"].get("path", "").rstrip("/") == "./deploy/k8s/overlays/production"]
    if len(apps) != 1:
        problems.append("no (single) Kustomization for ./deploy/k8s/overlays/production")
    for k in apps:
        spec = k["spec"]
        if not spec.get("dependsOn"):
            problems.append(f"{kn(k)}: does not dependsOn the infrastructure (KEDA CRDs)")
        dec = spec.get("decryption") or {}
        if dec.get("provider") != "sops" or (dec.get("secretRef") or {}).get("name") != "sops-age":
            problems.append(f"{kn(k)}: decryption is not {{provider: sops, secretRef: {{name: sops-age}}}}")
    for hr in r.of("HelmRelease"):
        chart = hr.get("spec", {}).get("chart", {}).get("spec", {})
        if not re.match(r"^\d+\.\d+\.\d+$", str(chart.get("version", ""))):
            problems.append(f"{kn(hr)}: chart version {chart.get('version')!r} is not pinned")
        if r.named("HelmRepository", chart.get("sourceRef", {}).get("name")) is None:
            problems.append(f"{kn(hr)}: sourceRef names no HelmRepository")
    if not r.of("HelmRelease"):
        problems.append("no HelmRelease (KEDA) in the infrastructure")
    emit("flux: kustomizations, sources and releases", problems)

    problems = []
    policies = {f"{p['metadata'].get('namespace', 'default')}:{p['metadata']['name']}": p for p in r.of("ImagePolicy")}
    repos = {i["metadata"]["name"] for i in r.of("ImageRepository")}
    for p in policies.values():
        if p.get("spec", {}).get("imageRepositoryRef", {}).get("name") not in repos:
            problems.append(f"{kn(p)}: imageRepositoryRef names no ImageRepository")
        if "semver" not in (p.get("spec", {}).get("policy") or {}):
            problems.append(f"{kn(p)}: policy is not semver")
    autos = r.of("ImageUpdateAutomation")
    if not autos:
        problems.append("no ImageUpdateAutomation")
    for a in autos:
        spec = a.get("spec", {})
        upath = os.path.join(root, spec.get("update", {}).get("path", "/nonexistent"))
        if spec.get("update", {}).get("strategy") != "Setters":
            problems.append(f"{kn(a)}: update strategy is not Setters")
        if spec.get("sourceRef", {}).get("name") not in gitrepos:
            problems.append(f"{kn(a)}: sourceRef names no GitRepository")
        markers = []
        for f in glob.glob(os.path.join(upath, "**", "*.y*ml"), recursive=True):
            markers += re.findall(r'\{"\$imagepolicy": *"([\w-]+):([\w-]+)(?::(?:tag|name))?"\}', open(f).read())
        if not markers:
            problems.append(f"{kn(a)}: no $imagepolicy marker under {spec.get('update', {}).get('path')}")
        for ns, name in markers:
            if f"{ns}:{name}" not in policies:
                problems.append(f"marker {ns}:{name} names no ImagePolicy")
    emit("flux: image automation and $imagepolicy markers", problems)

    problems = []
    providers = {p["metadata"]["name"] for p in r.of("Provider")}
    alerts = r.of("Alert")
    if not alerts:
        problems.append("no Alert")
    for a in alerts:
        spec = a.get("spec", {})
        if spec.get("eventSeverity") != "error":
            problems.append(f"{kn(a)}: eventSeverity is not error")
        if spec.get("providerRef", {}).get("name") not in providers:
            problems.append(f"{kn(a)}: providerRef names no Provider")
        if not spec.get("eventSources"):
            problems.append(f"{kn(a)}: no eventSources")
        kinds = {s.get("kind") for s in spec.get("eventSources", [])}
        for k in ("Kustomization", "GitRepository"):
            if k not in kinds:
                problems.append(f"{kn(a)}: does not watch {k}")
    emit("flux: alert on failed reconciliation", problems)


# ----------------------------------------------------------------------------
# SOPS
# ----------------------------------------------------------------------------
def cmd_sops(deploy):
    problems = []
    cfg_path = os.path.join(deploy, ".sops.yaml")
    try:
        rules = load_docs(cfg_path)[0].get("creation_rules") or []
    except (OSError, IndexError):
        rules = []
        problems.append(f"{cfg_path} missing")
    secrets_seen = 0
    for f in sorted(glob.glob(os.path.join(deploy, "**", "*.y*ml"), recursive=True)):
        try:
            docs = load_docs(f)
        except yaml.YAMLError:
            continue
        rel = os.path.relpath(f, deploy)
        for d in docs:
            if not isinstance(d, dict) or d.get("kind") != "Secret":
                continue
            secrets_seen += 1
            for section in ("data", "stringData"):
                for key, value in (d.get(section) or {}).items():
                    if not ENC_RE.match(str(value)):
                        problems.append(f"{rel}: {section}.{key} is not SOPS-encrypted (plaintext secret in Git)")
            meta = d.get("sops")
            if not isinstance(meta, dict):
                problems.append(f"{rel}: Secret {d['metadata'].get('name')} has no sops metadata block")
                continue
            if not ENC_RE.match(str(meta.get("mac", ""))):
                problems.append(f"{rel}: sops.mac missing or malformed")
            if meta.get("encrypted_regex") != "^(data|stringData)$":
                problems.append(f"{rel}: sops.encrypted_regex is {meta.get('encrypted_regex')!r}")
            recipients = {a.get("recipient") for a in meta.get("age") or []}
            if not recipients:
                problems.append(f"{rel}: no age recipient")
            if rel.startswith("tests" + os.sep):
                continue  # rendered fixtures: encrypted, but not edited with sops
            rule = next((x for x in rules if re.search(x.get("path_regex", ".*"), rel)), None)
            if rule is None:
                problems.append(f"{rel}: no creation rule in deploy/.sops.yaml matches it")
            else:
                if rule.get("encrypted_regex") != "^(data|stringData)$":
                    problems.append(".sops.yaml: encrypted_regex must be ^(data|stringData)$")
                want = {x.strip() for x in str(rule.get("age", "")).split(",") if x.strip()}
                if recipients != want:
                    problems.append(f"{rel}: encrypted for {sorted(recipients)}, .sops.yaml says {sorted(want)} (run sops updatekeys)")
    if secrets_seen == 0:
        problems.append("no Secret found under deploy/ (the signing key secret is missing)")
    emit("sops: secrets encrypted (no plaintext under data/stringData)", problems)


# ----------------------------------------------------------------------------
# Dockerfile
# ----------------------------------------------------------------------------
def cmd_dockerfile(path, cli_manifest):
    import tomllib

    text = open(path).read()
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        logical.append((cur + line).strip())
        cur = ""
    stages = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stages.append({"image": m.group(1), "name": (m.group(2) or "").lower(), "lines": []})
        elif stages:
            stages[-1]["lines"].append((word, rest.strip()))
    problems = []
    if len(stages) < 2:
        problems.append("not a multi-stage build")
        emit("Dockerfile", problems)
        return

    # What the workspace builds.
    package, binary, note = "sqsaga-cli", "sqsaga", ""
    if os.path.exists(cli_manifest):
        with open(cli_manifest, "rb") as f:
            manifest = tomllib.load(f)
        package = manifest.get("package", {}).get("name", "?")
        bins = manifest.get("bin") or []
        binary = bins[0].get("name", package) if bins else package
        if package != "sqsaga-cli":
            problems.append(f"{cli_manifest}: package is {package!r}, the Dockerfile builds sqsaga-cli")
        if binary != "sqsaga":
            problems.append(f"{cli_manifest}: builds binary {binary!r}; add [[bin]] name = \"sqsaga\"")
    for s in stages:
        if ":" not in s["image"].rsplit("/", 1)[-1] and "@" not in s["image"] and s["image"].lower() != "scratch":
            problems.append(f"FROM {s['image']} has no tag")
        if s["image"].endswith(":latest"):
            problems.append(f"FROM {s['image']} uses latest")
    builder, final = stages[0], stages[-1]
    if not builder["image"].startswith("rust:1.95-bookworm"):
        problems.append(f"builder image is {builder['image']}, expected rust:1.95-bookworm")
    runs = " ".join(rest for w, rest in builder["lines"] if w == "RUN")
    if not re.search(rf"cargo build --release --locked -p {re.escape(package)}(\s|$)", runs):
        problems.append(f"builder does not run `cargo build --release --locked -p {package}`")
    if f"target/release/{binary}" not in runs.split() and not re.search(rf"target/release/{re.escape(binary)}(\s|$)", runs):
        problems.append(f"builder does not take target/release/{binary}")
    if not re.match(r"^(debian:bookworm-slim|gcr\.io/distroless/cc-debian12)", final["image"]):
        problems.append(f"runtime image {final['image']} is not debian:bookworm-slim or distroless/cc-debian12")
    copies = [rest for w, rest in final["lines"] if w == "COPY" and "--from=" in rest]
    if not copies or not any(re.search(r"\s/usr/local/bin/sqsaga$", c) for c in copies):
        problems.append("runtime stage does not COPY --from the builder to /usr/local/bin/sqsaga")
    users = [rest for w, rest in final["lines"] if w == "USER"]
    if not users:
        problems.append("runtime stage has no USER (runs as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"runtime USER is {users[-1]}")
    elif users[-1].split(":")[0] != "65532":
        problems.append(f"runtime USER is {users[-1]}, expected 65532 (as runAsUser in deploy/k8s)")
    exposes = " ".join(rest for w, rest in final["lines"] if w == "EXPOSE").split()
    if "8080" not in [e.split("/")[0] for e in exposes]:
        problems.append("runtime stage does not EXPOSE 8080")
    entry = [rest for w, rest in final["lines"] if w == "ENTRYPOINT"]
    if not entry or entry[-1].replace(" ", "") != '["/usr/local/bin/sqsaga"]':
        problems.append('ENTRYPOINT is not ["/usr/local/bin/sqsaga"]')
    for s in stages:
        for w, rest in s["lines"]:
            if w not in ("ENV", "ARG"):
                continue
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", rest) if w == "ENV" else [rest.split("=")[0]]
            for n in names:
                if SECRET_NAME_RE.search(n):
                    problems.append(f"{w} {n} looks like a secret baked into the image")
                if w == "ENV" and s is final and n not in ALLOWED_ENV:
                    problems.append(f"ENV {n} is not a variable the binary reads")
    emit(f"Dockerfile (builds {package}, copies target/release/{binary}, non-root, EXPOSE 8080){note}", problems)


# ----------------------------------------------------------------------------
# Chef: rendered config.json
# ----------------------------------------------------------------------------
def cmd_config_json(path):
    import json

    problems = []
    with open(path) as f:
        cfg = json.load(f)
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (not in {SPEC_SOURCE})")
    for k in ("queue_url", "dlq_url", "region", "log_level", "service", "orchestrator_queue_url", "drain_timeout"):
        if k not in cfg:
            problems.append(f"missing key {k}")
    for k in ("visibility_timeout", "wait_time", "drain_timeout", "heartbeat_interval"):
        if k in cfg:
            try:
                parse_duration(cfg[k])
            except ValueError:
                problems.append(f"{k}={cfg[k]!r} is not a duration string like 30s")
    emit("chef: config.json keys are the binary's", problems)


def cmd_unit(path, drain_seconds, longest_step_seconds):
    problems = []
    drain_seconds, longest_step_seconds = float(drain_seconds), float(longest_step_seconds)
    if longest_step_seconds <= 0:
        problems.append("could not read the longest step timeout from the definitions")
    directives = {}
    for line in open(path):
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            directives.setdefault(k, []).append(v)

    def one(k):
        return (directives.get(k) or [None])[-1]

    exec_start = one("ExecStart") or ""
    if not re.match(r"^\S+/sqsaga worker --service [a-z][a-z0-9_-]* --config /etc/sqsaga/config\.json$", exec_start):
        problems.append(f"ExecStart={exec_start!r}")
    stop = one("TimeoutStopSec")
    try:
        if not parse_duration(stop) > drain_seconds + longest_step_seconds:
            problems.append(f"TimeoutStopSec={stop} is not longer than drain {drain_seconds:g}s + longest step {longest_step_seconds:g}s")
    except (ValueError, TypeError):
        problems.append(f"TimeoutStopSec={stop!r}")
    for k, v in (("KillSignal", "SIGTERM"), ("Restart", "on-failure"), ("NoNewPrivileges", "yes"),
                 ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
        if one(k) != v:
            problems.append(f"{k}={one(k)!r}, expected {v}")
    if not one("ReadWritePaths"):
        problems.append("no ReadWritePaths for the data dir")
    if one("User") in (None, "root", "0"):
        problems.append(f"User={one('User')!r} (must be the system user)")
    emit("chef: systemd unit (ExecStart, stop budget, hardening)", problems)


# ----------------------------------------------------------------------------
# CloudFormation semantics (least privilege, redrive, encryption)
# ----------------------------------------------------------------------------
def cmd_cfn(path):
    from cfnlint.decode import decode

    tpl, errs = decode(path)
    if errs or tpl is None:
        emit("cfn: template semantics", [str(e) for e in errs or ["cannot decode"]])
        return
    res = tpl.get("Resources", {})
    problems = []
    procs = ["Orchestrator", "Inventory", "Payment", "Notification"]
    for p in procs:
        q, dlq = res.get(f"{p}Queue"), res.get(f"{p}DeadLetterQueue")
        if not q or not dlq:
            problems.append(f"{p}Queue / {p}DeadLetterQueue missing")
            continue
        qp, dp = q.get("Properties", {}), dlq.get("Properties", {})
        rp = qp.get("RedrivePolicy", {})
        if rp.get("deadLetterTargetArn") != {"Fn::GetAtt": [f"{p}DeadLetterQueue", "Arn"]}:
            problems.append(f"{p}Queue: RedrivePolicy does not target {p}DeadLetterQueue")
        if rp.get("maxReceiveCount") != {"Ref": "MaxReceiveCount"}:
            problems.append(f"{p}Queue: maxReceiveCount is not the MaxReceiveCount parameter")
        if (dp.get("RedriveAllowPolicy") or {}).get("redrivePermission") != "byQueue":
            problems.append(f"{p}DeadLetterQueue: RedriveAllowPolicy is not byQueue")
        if dp.get("MessageRetentionPeriod") != 1209600:
            problems.append(f"{p}DeadLetterQueue: MessageRetentionPeriod is not 1209600")
        for name, props in ((f"{p}Queue", qp), (f"{p}DeadLetterQueue", dp)):
            sse = props.get("SqsManagedSseEnabled")
            if not (isinstance(sse, dict) and "Fn::If" in sse and sse["Fn::If"][0] == "UseKms"):
                problems.append(f"{name}: SqsManagedSseEnabled is not conditional on UseKms")
    src_max = tpl.get("Parameters", {}).get("MessageRetentionSeconds", {}).get("MaxValue", 1209600)
    if not int(src_max) < 1209600:
        problems.append("MessageRetentionSeconds may reach the DLQ retention")
    table = res.get("SagaTable", {}).get("Properties", {})
    if table.get("BillingMode") != "PAY_PER_REQUEST":
        problems.append("SagaTable: not PAY_PER_REQUEST")
    if table.get("KeySchema") != [{"AttributeName": "id", "KeyType": "HASH"}]:
        problems.append("SagaTable: key is not id (HASH)")
    # The table DynamoStore expects (crates/aws/src/dynamo.rs, create_table).
    attrs = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    want_attrs = {"id": "S", "due_pk": "S", "wake_at": "N", "end_pk": "S", "ended_at": "N"}
    if attrs != want_attrs:
        problems.append(f"SagaTable: attributes {attrs}, want {want_attrs}")
    gsi = {g["IndexName"]: g for g in table.get("GlobalSecondaryIndexes", [])}
    want_gsi = {"by_due": ("due_pk", "wake_at", "INCLUDE"), "by_end": ("end_pk", "ended_at", "INCLUDE")}
    if set(gsi) != set(want_gsi):
        problems.append(f"SagaTable: indexes {sorted(gsi)}, want {sorted(want_gsi)}")
    for name, (hash_key, range_key, projection) in want_gsi.items():
        g = gsi.get(name, {})
        if g.get("KeySchema") != [{"AttributeName": hash_key, "KeyType": "HASH"},
                                  {"AttributeName": range_key, "KeyType": "RANGE"}]:
            problems.append(f"SagaTable: GSI {name} is not ({hash_key}, {range_key})")
        if (g.get("Projection") or {}).get("ProjectionType") != projection:
            problems.append(f"SagaTable: GSI {name} projection is not {projection}")
        projected = set((g.get("Projection") or {}).get("NonKeyAttributes", []))
        if projected != {"status", "saga", "version", "started_at"}:
            problems.append(f"SagaTable: GSI {name} projects {sorted(projected)}")
    # Retention: terminal sagas carry `expires_at` (crates/aws/src/item.rs, TTL_ATTRIBUTE).
    if table.get("TimeToLiveSpecification") != {"AttributeName": "expires_at", "Enabled": True}:
        problems.append(f"SagaTable: TTL is not enabled on expires_at: {table.get('TimeToLiveSpecification')}")
    if (table.get("SSESpecification") or {}).get("SSEEnabled") is not True:
        problems.append("SagaTable: SSE not enabled")
    if (table.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is not True:
        problems.append("SagaTable: PITR not enabled")
    emit("cfn: queues, DLQs, redrive, encryption, table", problems)

    problems = []

    def statements(role):
        out = []
        for pol in role.get("Properties", {}).get("Policies", []):
            for st in pol["PolicyDocument"]["Statement"]:
                if isinstance(st, dict) and "Fn::If" in st:
                    cond, then, _ = st["Fn::If"]
                    out.append((cond, then))
                else:
                    out.append((None, st))
        return out

    def as_list(x):
        return x if isinstance(x, list) else [x]

    def arn_of(ref):
        if isinstance(ref, dict) and "Fn::GetAtt" in ref:
            return ref["Fn::GetAtt"][0]
        if isinstance(ref, dict) and "Fn::Sub" in ref:
            return str(ref["Fn::Sub"])
        if isinstance(ref, dict) and "Ref" in ref:
            return ref["Ref"]
        return str(ref)

    expected_send = {
        "OrchestratorRole": {"InventoryQueue", "PaymentQueue", "NotificationQueue", "OrchestratorQueue",
                             "OrchestratorDeadLetterQueue"},
        "InventoryRole": {"OrchestratorQueue", "InventoryDeadLetterQueue"},
        "PaymentRole": {"OrchestratorQueue", "PaymentDeadLetterQueue"},
        "NotificationRole": {"OrchestratorQueue", "NotificationDeadLetterQueue"},
    }
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
    for role_name, want_send in list(expected_send.items()) + [("KedaOperatorRole", set())]:
        role = res.get(role_name)
        if role is None:
            problems.append(f"{role_name} missing")
            continue
        trust = role["Properties"].get("AssumeRolePolicyDocument")
        trust_text = str(trust)
        if "sts:AssumeRoleWithWebIdentity" not in trust_text or ":sub" not in trust_text:
            problems.append(f"{role_name}: trust is not AssumeRoleWithWebIdentity with a :sub condition")
        send, received, resolve, dynamo = set(), {}, set(), False
        for cond, st in statements(role):
            actions = as_list(st.get("Action", []))
            resources = as_list(st.get("Resource", []))
            if st.get("Effect") != "Allow":
                continue
            if any("*" in str(a) for a in actions):
                problems.append(f"{role_name}: wildcard action {actions}")
            if any(r == "*" for r in resources):
                problems.append(f"{role_name}: Resource *")
            if any(str(a).startswith("kms:") for a in actions) and cond != "UseKms":
                problems.append(f"{role_name}: KMS actions not conditional on UseKms")
            if any(str(a).startswith("dynamodb:") for a in actions):
                dynamo = True
                # What DynamoStore calls (crates/aws/src/dynamo.rs), on the
                # table and each index it queries.
                needed = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem",
                          "dynamodb:UpdateItem", "dynamodb:Query"}
                if not needed <= set(actions):
                    problems.append(f"{role_name}: DynamoDB actions lack {sorted(needed - set(actions))}")
                for index in ("by_due", "by_end"):
                    if not any(f"/index/{index}" in str(r) for r in resources):
                        problems.append(f"{role_name}: no access to the {index} index")
            for a in actions:
                if a == "sqs:SendMessage":
                    send |= {arn_of(r) for r in resources}
                elif a == "sqs:GetQueueUrl":
                    resolve |= {arn_of(r) for r in resources}
                elif a in consume:
                    for r in resources:
                        received.setdefault(arn_of(r), set()).add(a)
        if role_name == "KedaOperatorRole":
            if send or set(received) != {"InventoryQueue", "PaymentQueue", "NotificationQueue"} or \
                    any(v != {"sqs:GetQueueAttributes"} for v in received.values()):
                problems.append(f"{role_name}: must only read the attributes of the worker queues")
            continue
        own = role_name.replace("Role", "Queue")
        if resolve - send - set(received):
            problems.append(f"{role_name}: GetQueueUrl on queues it neither sends to nor consumes: {sorted(resolve - send - set(received))}")
        if send != want_send:
            problems.append(f"{role_name}: SendMessage on {sorted(send)}, expected {sorted(want_send)}")
        if set(received) != {own} or received.get(own) != consume:
            problems.append(f"{role_name}: consumes {received}, expected exactly {sorted(consume)} on {own}")
        if dynamo != (role_name == "OrchestratorRole"):
            problems.append(f"{role_name}: DynamoDB access {'missing' if not dynamo else 'not allowed'}")
    outputs = tpl.get("Outputs", {})
    for p in ["Orchestrator", "Inventory", "Payment", "Notification"]:
        for o in (f"{p}QueueUrl", f"{p}RoleArn"):
            if o not in outputs:
                problems.append(f"output {o} missing")
    emit("cfn: least-privilege IAM roles (IRSA)", problems)


if __name__ == "__main__":
    load_spec()
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "manifests": cmd_manifests,
        "bad-fixtures": cmd_bad_fixtures,
        "builtin": cmd_builtin,
        "kustomize-sources": cmd_kustomize_sources,
        "flux": cmd_flux,
        "sops": cmd_sops,
        "dockerfile": cmd_dockerfile,
        "config-json": cmd_config_json,
        "unit": cmd_unit,
        "cfn": cmd_cfn,
    }[cmd](*args)
PYEOF

# ---------------------------------------------------------------------------
# Ruby helper: converges the Chef recipe against stub resources (no Chef
# needed), then renders both templates with the variables the recipe passed,
# exactly as Chef would (ERB, trim mode "-").
# ---------------------------------------------------------------------------
cat >"$WORK/chef_harness.rb" <<'RBEOF'
require 'erb'
require 'json'

cookbook, out_dir, install_dir, data_dir, mode = ARGV

# Attributes: evaluate attributes/default.rb with an auto-vivifying `default`.
class AttrHash < Hash
  def initialize
    super { |h, k| h[k] = AttrHash.new }
  end
end
attrs = AttrHash.new
Object.new.tap { |o| o.define_singleton_method(:default) { attrs } }
      .instance_eval(File.read("#{cookbook}/attributes/default.rb"), "#{cookbook}/attributes/default.rb")
s = attrs['sqsaga']
s['service'] = 'inventory'
s['region'] = 'us-east-1'
s['binary_sha256'] = 'ab' * 32
s['install_dir'] = install_dir
s['data_dir'] = data_dir
s['otlp_endpoint'] = 'http://127.0.0.1:4317'

# A resource block's properties, recorded. A BasicObject, so that properties
# named like Kernel methods (`system true`) are recorded, not executed.
class Recorder < BasicObject
  attr_reader :type, :name, :props
  def initialize(type, name)
    @type, @name, @props = type, name, ::Hash.new { |h, k| h[k] = [] }
  end
  def method_missing(m, *args, &_blk)
    @props[m] << args
    nil
  end
  def respond_to_missing?(*) = true
  def prop(m) = (@props[m].last || [])[0]
  # Kernel functions a resource block may call.
  %i(Integer Float String Array Hash format raise).each do |f|
    define_method(f) { |*a| ::Kernel.send(f, *a) }
  end
end

class Run
  attr_reader :resources, :node
  def initialize(node, bag_item)
    @node, @bag_item, @resources = node, bag_item, []
  end
  def data_bag_item(bag, item, secret = nil)
    raise "404 Not Found: data bag item #{bag}/#{item}" if @bag_item.nil?
    @bag_item
  end
  %w(group user directory remote_file template execute service).each do |t|
    define_method(t) do |name, &blk|
      r = Recorder.new(t, name)
      r.instance_eval(&blk) if blk
      @resources << r
      r
    end
  end
  def find(type, pattern) = @resources.find { |r| r.type == type && r.name.to_s.match?(pattern) }
end

recipe = "#{cookbook}/recipes/default.rb"
fixture = JSON.parse(File.read("#{cookbook}/test/fixtures/data_bags/sqsaga/inventory.json"))
# At least 32 bytes: the binary refuses shorter signing keys.
fixture['signing_key'] = 'test-only-signing-key-0123456789abcdef'

def result(name, problems)
  if problems.empty?
    puts "ok\t#{name}"
  else
    puts "FAIL\t#{name}\t#{problems.join('; ')}"
  end
end

# A missing data bag item must stop the run, naming the item.
begin
  Run.new(attrs, nil).instance_eval(File.read(recipe), recipe)
  result('chef: missing data bag item fails the run', ['the recipe went on without its data bag item'])
rescue LocalJumpError
  result('chef: missing data bag item fails the run', ['the recipe `return`s silently (the node would look converged)'])
rescue RuntimeError => e
  problems = e.message.include?('sqsaga/inventory') ? [] : ["error does not name the item: #{e.message}"]
  result('chef: missing data bag item fails the run', problems)
end

run = Run.new(attrs, fixture)
begin
  run.instance_eval(File.read(recipe), recipe)
rescue StandardError => e
  result('chef: recipe converges (stub resources)', ["#{e.class}: #{e.message} at #{e.backtrace.first}"])
  exit 0
end
problems = []
bin = run.find('remote_file', %r{/bin/sqsaga\z})
cfg = run.find('template', %r{/config\.json\z})
unit = run.find('template', /\.service\z/)
svc = run.find('service', /\Asqsaga-inventory\z/)
reload = run.find('execute', /daemon-reload/)
if bin.nil?
  problems << 'no remote_file for the binary'
else
  problems << 'remote_file has no checksum' unless bin.prop(:checksum) == 'ab' * 32
  problems << 'binary change does not restart the service' unless bin.props[:notifies].any? { |a| a[0] == :restart }
end
if cfg.nil?
  problems << 'no config.json template'
else
  problems << 'config.json template is not sensitive' unless cfg.prop(:sensitive) == true
  problems << 'config.json template has no `verify ... config check --config %{path}`' unless cfg.prop(:verify).to_s.include?('config check --config %{path}')
  problems << 'config change does not restart the service' unless cfg.props[:notifies].any? { |a| a[0] == :restart }
  problems << 'config.json is world-readable' unless cfg.prop(:mode).to_s.end_with?('0')
end
if unit.nil?
  problems << 'no systemd unit template'
else
  problems << 'unit change does not run daemon-reload' unless unit.props[:notifies].any? { |a| a[0] == :run && a[1].to_s.include?('daemon-reload') }
  problems << 'unit change does not restart the service' unless unit.props[:notifies].any? { |a| a[0] == :restart }
end
problems << 'no execute[systemctl daemon-reload] with action :nothing' unless reload && reload.prop(:action) == :nothing
problems << 'service sqsaga-inventory is not enabled and started' unless svc && Array(svc.prop(:action)).include?(:enable)
if bin && cfg && run.resources.index(bin) > run.resources.index(cfg)
  problems << 'the config template (whose verify runs the binary) comes before the binary'
end
result('chef: recipe converges (stub resources): checksum, verify, sensitive, notifications', problems)

render = lambda do |tpl, vars, out|
  ctx = Object.new
  (vars || {}).each { |k, v| ctx.instance_variable_set("@#{k}", v) }
  text = ERB.new(File.read("#{cookbook}/templates/#{tpl}"), trim_mode: '-').result(ctx.instance_eval { binding })
  File.write(out, text)
end
begin
  render.call(cfg.prop(:source), cfg.prop(:variables), "#{out_dir}/config.json")
  render.call(unit.prop(:source), unit.prop(:variables), "#{out_dir}/sqsaga-inventory.service")
  result('chef: templates render with Ruby ERB', [])
rescue StandardError, SyntaxError => e
  result('chef: templates render with Ruby ERB', ["#{e.class}: #{e.message}"])
end
RBEOF

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

# Dockerfile
if [ "$have_py" = true ]; then
    pycheck dockerfile Dockerfile crates/cli/Cargo.toml
    if [ -f .dockerignore ] && grep -qx '/target' .dockerignore; then
        ok ".dockerignore keeps target/ out of the build context"
    else
        fail ".dockerignore" "missing or does not exclude /target"
    fi
fi

# Kustomize renders, with no warnings
render() { # render NAME DIR OUT
    if [ "$have_kubectl" = false ]; then
        fail "kubectl kustomize $2" "kubectl not found"
        return 1
    fi
    if ! kubectl kustomize "$2" >"$3" 2>"$WORK/kustomize.err"; then
        fail "kubectl kustomize $2" "$(head -c 1500 "$WORK/kustomize.err")"
        return 1
    fi
    if [ -s "$WORK/kustomize.err" ]; then
        fail "kubectl kustomize $2" "warnings on stderr: $(head -c 1500 "$WORK/kustomize.err")"
        return 1
    fi
    ok "kubectl kustomize $2 (empty stderr)"
}
declare -A rendered=()
render base deploy/k8s/base "$WORK/base.yaml" && rendered[base]=1
render production deploy/k8s/overlays/production "$WORK/production.yaml" && rendered[production]=1
render infrastructure deploy/flux/infrastructure "$WORK/infrastructure.yaml" && rendered[infrastructure]=1

if [ "$have_py" = true ]; then
    pycheck kustomize-sources deploy

    # kubernetes-validate (strict) on the built-in kinds.
    kv_args=()
    for v in "${KUBERNETES_VERSIONS[@]}"; do kv_args+=(-k "$v"); done
    for target in base production infrastructure; do
        [ -n "${rendered[$target]:-}" ] || continue
        count=$("$PY" "$WORK/checks.py" builtin "$WORK/$target.yaml" "$WORK/$target.builtin.yaml" 2>"$WORK/py.err") || {
            fail "kubernetes-validate: $target" "$(tail -c 600 "$WORK/py.err")"
            continue
        }
        if "$VENV/bin/kubernetes-validate" --strict --quiet "${kv_args[@]}" "$WORK/$target.builtin.yaml" >"$WORK/kv.out" 2>&1 \
            && ! grep -qE '^(ERROR|WARN|FATAL)' "$WORK/kv.out"; then
            ok "kubernetes-validate --strict: $target ($count built-in objects; Kubernetes ${KUBERNETES_VERSIONS[*]})"
        else
            fail "kubernetes-validate --strict: $target" "$(head -c 1500 "$WORK/kv.out")"
        fi
    done

    [ -n "${rendered[base]:-}" ] && pycheck manifests "$WORK/base.yaml" base
    [ -n "${rendered[production]:-}" ] && pycheck manifests "$WORK/production.yaml" production
    [ -n "${rendered[infrastructure]:-}" ] && pycheck flux "$ROOT" deploy/flux/clusters/production "$WORK/infrastructure.yaml"
    pycheck bad-fixtures deploy/tests/bad
    pycheck sops deploy
fi

# The definitions copy deployed by Kustomize must be the definition in examples/.
if [ ! -f examples/order/create_order.yaml ]; then
    skip "definitions copy" "examples/order/create_order.yaml does not exist yet"
elif cmp -s examples/order/create_order.yaml deploy/k8s/base/definitions/create_order.yaml; then
    ok "definitions copy deploy/k8s/base/definitions/create_order.yaml = examples/order/create_order.yaml"
else
    fail "definitions copy" "deploy/k8s/base/definitions/create_order.yaml differs from examples/order/create_order.yaml; run: cp examples/order/create_order.yaml deploy/k8s/base/definitions/"
fi

# Alerting rules: promtool's syntax check and the rules' unit tests; the
# PrometheusRule in the Kubernetes tree carries the same groups.
if command -v promtool >/dev/null 2>&1; then
    run_tool "promtool check rules deploy/prometheus/sqsaga-rules.yml" promtool check rules deploy/prometheus/sqsaga-rules.yml
    run_tool "promtool test rules deploy/prometheus/sqsaga-rules.test.yml" \
        promtool test rules deploy/prometheus/sqsaga-rules.test.yml
else
    fail "promtool rules" "promtool not found (Debian package prometheus; scripts/test installs it)"
fi
if [ "$have_py" = true ]; then
    if "$PY" - deploy/k8s/base/prometheus-rule.yaml deploy/prometheus/sqsaga-rules.yml deploy/grafana/sqsaga.json \
        >"$WORK/out" 2>&1 <<'PY'
import json, sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
plain = yaml.safe_load(open(sys.argv[2]))
if crd["spec"]["groups"] != plain["groups"]:
    sys.exit(f"{sys.argv[1]} spec.groups differ from {sys.argv[2]} groups: copy the groups over")
dash = json.load(open(sys.argv[3]))
if not dash.get("panels") or any(not p.get("targets") for p in dash["panels"]):
    sys.exit(f"{sys.argv[3]}: a panel without queries")
PY
    then
        ok "PrometheusRule groups = deploy/prometheus/sqsaga-rules.yml; Grafana dashboard parses"
    else
        fail "PrometheusRule / dashboard" "$(cat "$WORK/out")"
    fi
fi

# yamllint
if [ "$have_py" = true ]; then
    run_tool "yamllint deploy/ (deploy/.yamllint)" "$VENV/bin/yamllint" --strict -c deploy/.yamllint deploy
    run_tool "cfn-lint deploy/aws/sqsaga.yaml" "$VENV/bin/cfn-lint" deploy/aws/sqsaga.yaml
    pycheck cfn deploy/aws/sqsaga.yaml
fi

# Chef
COOKBOOK=deploy/chef/cookbooks/sqsaga_worker
if [ "$have_ruby" = true ]; then
    syntax_errors=""
    for f in "$COOKBOOK"/metadata.rb "$COOKBOOK"/attributes/*.rb "$COOKBOOK"/recipes/*.rb "$COOKBOOK"/test/integration/*/*.rb; do
        ruby -c "$f" >/dev/null 2>"$WORK/rubyc.err" || syntax_errors+="$f: $(cat "$WORK/rubyc.err") "
    done
    if [ -z "$syntax_errors" ]; then ok "chef: ruby -c (metadata, attributes, recipe, InSpec)"; else fail "chef: ruby -c" "$syntax_errors"; fi

    # The unit's ExecStart must exist for systemd-analyze verify, so the
    # recipe is converged with install_dir pointing at a temporary directory
    # whose bin/sqsaga is the real binary when built, else /bin/true. The
    # data dir is temporary too (ReadWritePaths, config check).
    mkdir -p "$WORK/opt/sqsaga/bin" "$WORK/data" "$WORK/chef"
    if [ -n "$SQSAGA_BIN" ]; then
        cp "$SQSAGA_BIN" "$WORK/opt/sqsaga/bin/sqsaga"
    else
        cp /bin/true "$WORK/opt/sqsaga/bin/sqsaga"
    fi
    ruby "$WORK/chef_harness.rb" "$COOKBOOK" "$WORK/chef" "$WORK/opt/sqsaga" "$WORK/data" >"$WORK/harness.out" 2>&1 || true
    grep -P '^(ok|FAIL|skip)\t' "$WORK/harness.out" >"$WORK/harness.lines" || true
    report <"$WORK/harness.lines"
    if ! grep -qP '^(ok|FAIL)\t' "$WORK/harness.out"; then
        fail "chef: harness" "$(head -c 1500 "$WORK/harness.out")"
    fi

    if [ -s "$WORK/chef/config.json" ]; then
        run_tool "chef: rendered config.json parses (python3 -m json.tool)" python3 -m json.tool "$WORK/chef/config.json"
        [ "$have_py" = true ] && pycheck config-json "$WORK/chef/config.json"
        if [ -n "$SQSAGA_BIN" ] && "$SQSAGA_BIN" config check --help >/dev/null 2>&1; then
            # Without SQSAGA_BIN in its environment: the binary rejects unknown SQSAGA_* variables as typos.
            run_tool "chef: sqsaga config check accepts the rendered config.json" env -u SQSAGA_BIN "$SQSAGA_BIN" config check --config "$WORK/chef/config.json"
        else
            skip "chef: sqsaga config check" "no sqsaga binary with \`config check\` (set SQSAGA_BIN or build it)"
        fi
    fi
    if [ -s "$WORK/chef/sqsaga-inventory.service" ]; then
        # Longest step timeout from the definitions deployed by Kustomize.
        longest=$("$PY" -c '
import sys, yaml, re
d = yaml.safe_load(open(sys.argv[1]))
u = {"ms": .001, "s": 1, "m": 60, "h": 3600, "d": 86400}
sec = lambda t: sum(int(n) * u[x] for n, x in re.findall(r"(\d+)(ms|s|m|h|d)", str(t)))
print(max(sec(s.get("timeout", (d.get("defaults") or {}).get("timeout", "0s"))) for s in d["steps"]))
' deploy/k8s/base/definitions/create_order.yaml 2>/dev/null || echo 0)
        drain=$(ruby -e 'default = Hash.new { |h, k| h[k] = Hash.new(&h.default_proc) }; eval(File.read(ARGV[0])); print default["sqsaga"]["drain_timeout_seconds"]' "$COOKBOOK/attributes/default.rb")
        [ "$have_py" = true ] && pycheck unit "$WORK/chef/sqsaga-inventory.service" "$drain" "$longest"
        if command -v systemd-analyze >/dev/null; then
            if systemd-analyze verify "$WORK/chef/sqsaga-inventory.service" >"$WORK/sa.out" 2>"$WORK/sa.err" && [ ! -s "$WORK/sa.err" ]; then
                ok "chef: systemd-analyze verify of the rendered unit (empty stderr)"
            else
                fail "chef: systemd-analyze verify" "$(head -c 1500 "$WORK/sa.err")"
            fi
        else
            fail "chef: systemd-analyze verify" "systemd-analyze not found"
        fi
    fi
fi

# sqsaga lint-deploy, once the binary has it.
if [ -n "$SQSAGA_BIN" ] && "$SQSAGA_BIN" lint-deploy --help >/dev/null 2>&1; then
    run_tool "sqsaga lint-deploy deploy" "$SQSAGA_BIN" lint-deploy deploy
else
    skip "sqsaga lint-deploy" "no sqsaga binary with \`lint-deploy\` (set SQSAGA_BIN or build it)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
