//! Manifest checks by table: a worker Deployment the binary is happy with,
//! one fault at a time, and the findings that come out.

use std::time::Duration;

use super::*;
use crate::testing::binary;

/// A worker Deployment the binary is happy with; cases break one thing each.
const WORKER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sqsaga-inventory
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 60
      containers:
        - name: sqsaga
          image: registry.example:5000/sqsaga:1.2.3
          args: [worker, --service, inventory]
          ports:
            - {name: metrics, containerPort: 8080}
          envFrom:
            - configMapRef: {name: common}
          env:
            - name: SQSAGA_INSTANCE_ID
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe: {httpGet: {path: /readyz, port: metrics}}
          livenessProbe: {httpGet: {path: /healthz, port: metrics}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: common
data:
  SQSAGA_HTTP_ADDR: 0.0.0.0:8080
  SQSAGA_DRAIN_TIMEOUT: 30s
"#;

const DEPLOYMENT: &str = "Deployment/sqsaga-inventory";
const CONTAINER: &str = "Deployment/sqsaga-inventory spec.template.spec.containers[0]";

/// The worker as an orchestrator (which runs the built-in saga: longest step 10s).
fn orchestrator() -> String {
    WORKER.replace("[worker, --service, inventory]", "[orchestrator]")
}

/// One expected finding: its path, and needles its printed form contains.
type Expected<'a> = (&'a str, &'a [&'a str]);

/// Every finding of `yaml`, as printed.
fn lint(yaml: &str) -> Vec<Finding> {
    lint_manifests("test.yaml", yaml, &binary()).findings
}

/// Asserts that `yaml` gives exactly the findings `want`: one `(path, needles)`
/// per finding, in order, each finding's message containing every needle
/// (warnings are findings too: `warning` is a needle of their printed form).
fn check(case: &str, yaml: &str, want: &[Expected<'_>]) {
    let got = lint(yaml);
    let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), want.len(), "{case}: {shown:#?}");
    for (f, (path, needles)) in got.iter().zip(want) {
        assert_eq!(f.file, "test.yaml", "{case}");
        assert_eq!(f.path, *path, "{case}: {f}");
        for needle in *needles {
            assert!(f.to_string().contains(needle), "{case}: `{needle}` not in {f}");
        }
    }
}

#[test]
fn one_fault_one_finding() {
    let definitions_mounted = orchestrator()
        .replace(
            "          readinessProbe:",
            "          volumeMounts: [{name: defs, mountPath: /etc/defs}]\n          readinessProbe:",
        )
        .replace("      containers:", "      volumes: [{name: defs, configMap: {name: defs}}]\n      containers:")
        + "  SQSAGA_DEFINITIONS: /etc/defs\n"
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: defs}\ndata:\n  slow.yaml: |\n"
        + "    name: slow\n    version: 1\n    deadline: 5m\n    steps:\n"
        + "      - {name: a, service: inventory, action: inventory.reserve, contract: inventory/v1, timeout: 45s}\n"
        + "  fleet.yaml: 'not a saga'\n";
    let scaled = WORKER.replace("spec:\n  template:", "spec:\n  replicas: 3\n  template:")
        + "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: s}\n"
        + "spec:\n  scaleTargetRef: {name: sqsaga-inventory}\n";
    let grace = &format!("{DEPLOYMENT} spec.template.spec.terminationGracePeriodSeconds");
    let port = &format!("{CONTAINER}.ports[0].containerPort");
    let args = &format!("{CONTAINER}.args");
    let liveness = &format!("{CONTAINER}.livenessProbe.httpGet.path");
    let readiness = &format!("{CONTAINER}.readinessProbe.httpGet.path");
    let image = &format!("{CONTAINER}.image");
    let env0 = &format!("{CONTAINER}.env[0].name");
    let probe_port = &format!("{CONTAINER}.livenessProbe.httpGet.port");
    let grpc = &format!("{CONTAINER}.livenessProbe.grpc");
    let command = &format!("{CONTAINER}.command");

    let cases: Vec<(&str, String, Vec<Expected>)> = vec![
        ("correct", WORKER.into(), vec![]),
        // Images: pinned, a registry port is not a tag.
        ("latest", WORKER.replace("sqsaga:1.2.3", "sqsaga:latest"), vec![(image, &["`latest`"])]),
        (
            "untagged",
            WORKER.replace("sqsaga:1.2.3", "sqsaga"),
            vec![(image, &["has no tag", "registry.example:5000/sqsaga"])],
        ),
        // Variables: named where they are set, hints from the settings table.
        (
            "unknown variable in a ConfigMap",
            WORKER.replace("  SQSAGA_DRAIN_TIMEOUT: 30s\n", "  SQSAGA_DRAIN_TIMEOUT: 30s\n  SQSAGA_TYPO: \"1\"\n"),
            vec![("ConfigMap/common data.SQSAGA_TYPO", &["`SQSAGA_TYPO`", "envFrom[0]"])],
        ),
        (
            "misspelt variable",
            WORKER.replace("SQSAGA_DRAIN_TIMEOUT: 30s", "SQSAGA_DRAIN_TIMOUT: 30s"),
            vec![("ConfigMap/common data.SQSAGA_DRAIN_TIMOUT", &["did you mean `SQSAGA_DRAIN_TIMEOUT`"])],
        ),
        (
            "unknown variable in env",
            WORKER.replace("          env:\n", "          env:\n            - {name: SQSAGA_TYPO, value: \"1\"}\n"),
            vec![(env0, &["`SQSAGA_TYPO`"])],
        ),
        (
            "value checked by the binary's resolver",
            WORKER.replace("SQSAGA_DRAIN_TIMEOUT: 30s", "SQSAGA_DRAIN_TIMEOUT: soon"),
            vec![("ConfigMap/common data.SQSAGA_DRAIN_TIMEOUT", &["SQSAGA_DRAIN_TIMEOUT=soon"])],
        ),
        // Probes and ports.
        (
            "liveness path",
            WORKER.replace("path: /healthz", "path: /health"),
            vec![(liveness, &["`/health`", "/healthz"])],
        ),
        (
            "readiness on /healthz",
            WORKER.replace("path: /readyz", "path: /healthz"),
            vec![(readiness, &["wrong endpoint"])],
        ),
        (
            "metrics port",
            WORKER.replace("containerPort: 8080}", "containerPort: 9090}"),
            vec![(port, &["`metrics` is 9090", "listens on 8080"])],
        ),
        (
            "loopback default address",
            WORKER.replace("  SQSAGA_HTTP_ADDR: 0.0.0.0:8080\n", ""),
            vec![(CONTAINER, &["127.0.0.1:8080", "default of `http_addr`"])],
        ),
        (
            "probe by number",
            WORKER.replace("path: /healthz, port: metrics", "path: /healthz, port: 8080"),
            vec![(probe_port, &["warning", "named port `metrics`"])],
        ),
        (
            "gRPC probe",
            WORKER.replace(
                "livenessProbe: {httpGet: {path: /healthz, port: metrics}}",
                "livenessProbe: {grpc: {port: 8080}}",
            ),
            vec![(grpc, &["no gRPC health check"])],
        ),
        // Arguments, parsed by the binary.
        (
            "unknown flag",
            WORKER.replace("[worker, --service, inventory]", "[worker, --servce, inventory]"),
            vec![(args, &["--servce", "not a command line this binary accepts"])],
        ),
        (
            "unknown service",
            WORKER.replace("[worker, --service, inventory]", "[worker, --service, shipping]"),
            vec![(args, &["`shipping`", "inventory, payment, notification"])],
        ),
        (
            "wrapper command",
            WORKER.replace("args: [worker, --service, inventory]", "command: [/bin/sh, -c, 'exec sqsaga worker']"),
            vec![(command, &["warning", "runs `/bin/sh`"])],
        ),
        // Stop budget: grace > longest step (built-in 10s) + drain 30s.
        (
            "grace too short for the built-in saga",
            orchestrator().replace("Seconds: 60", "Seconds: 40"),
            vec![(grace, &["40s: must exceed", "10s", "built-in definitions", "30s", "= 40s"])],
        ),
        ("grace just enough", orchestrator().replace("Seconds: 60", "Seconds: 41"), vec![]),
        (
            "grace unset",
            WORKER.replace("      terminationGracePeriodSeconds: 60\n", ""),
            vec![(grace, &["unset (Kubernetes' default 30s)"])],
        ),
        (
            "grace not an integer",
            WORKER.replace("Seconds: 60", "Seconds: 60s"),
            vec![(grace, &["not an integer number of seconds"])],
        ),
        (
            "definitions from the mounted ConfigMap (fleet.yaml is not one)",
            definitions_mounted,
            vec![(grace, &["45s", "ConfigMap/defs data.slow.yaml"])],
        ),
        // Autoscaling.
        (
            "replicas under KEDA",
            scaled,
            vec![("Deployment/sqsaga-inventory spec.replicas", &["replicas: 3", "ScaledObject/s"])],
        ),
        // Unreadable objects are findings, not crashes.
        (
            "wrong type",
            WORKER.replace(
                "          ports:\n            - {name: metrics, containerPort: 8080}\n",
                "          ports: 8080\n",
            ),
            vec![(DEPLOYMENT, &["cannot be read", "expected a sequence"])],
        ),
        ("not YAML", "a: [\n".into(), vec![("line 2", &["not valid YAML"])]),
    ];
    for (case, yaml, want) in &cases {
        check(case, yaml, want);
    }
}

#[test]
fn workloads_and_longest_step_are_reported() {
    let lint = lint_manifests("test.yaml", &orchestrator(), &binary());
    assert_eq!(lint.workloads, 1);
    let longest = lint.longest_step.unwrap_or_else(|| panic!("no longest step"));
    assert_eq!(longest.timeout, Duration::from_secs(10));
    assert!(longest.source.contains("step `reserve` of saga `create_order` v1"), "{}", longest.source);
    // Not a sqsaga image: not a sqsaga workload.
    assert_eq!(lint_manifests("t", &WORKER.replace("sqsaga:1.2.3", "nginx:1"), &binary()).workloads, 0);
}

#[test]
fn grace_problem_is_strict() {
    let step = LongestStep { timeout: Duration::from_secs(10), source: "x".into() };
    assert!(grace_problem(40, Duration::from_secs(30), "d", Some(&step)).is_some());
    assert!(grace_problem(41, Duration::from_secs(30), "d", Some(&step)).is_none());
    assert!(grace_problem(31, Duration::from_secs(30), "d", None).is_none());
}

#[test]
fn image_references() {
    assert_eq!(image_problem("sqsaga@sha256:0123"), None);
    assert_eq!(image_problem("sqsaga:latest@sha256:0123"), None);
    assert_eq!(image_problem("localhost:5000/sqsaga:0.1.0"), None);
    assert!(image_problem("ubuntu").is_some());
    assert!(image_problem("ubuntu:").is_some());
}
