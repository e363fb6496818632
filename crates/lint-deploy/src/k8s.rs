//! Kubernetes objects as lint-deploy reads them: serde structs of just the
//! fields it checks, nothing else.
//!
//! YAML is loaded with yaml-rust2 and converted to `serde_json::Value`, from
//! which the structs are deserialised: no second YAML stack, and no
//! `k8s-openapi` (its full schema costs more to build than this crate, and
//! schema validation is kubeconform's job in the deploy checks). Fields not
//! listed here are ignored, so a manifest is never rejected for what
//! lint-deploy does not check; a field it does check with the wrong type
//! makes its object unreadable, which is reported as a finding.
//!
//! Floating-point YAML scalars are kept as their text (`1.10` stays `1.10`),
//! because the fields that may hold one are strings to Kubernetes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use yaml_rust2::Yaml;

/// A YAML document as a JSON value (the serde data model the structs read).
pub(crate) fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(h.iter().filter_map(|(k, v)| Some((scalar_key(k)?, to_json(v)))).collect()),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// A mapping key as Kubernetes would see it (`8080:` is the key `"8080"`).
fn scalar_key(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `null` (`env:` with nothing after it) read as the empty default.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A scalar where Kubernetes wants a string (env values, ConfigMap data),
/// kept as written so values are checked as the container would see them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A port: a number or the name of a container port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    Text(String),
}

impl IntOrString {
    /// The number, if it is one (`"8080"` counts, as for Kubernetes).
    pub(crate) fn number(&self) -> Option<i64> {
        match self {
            IntOrString::Int(n) => Some(*n),
            IntOrString::Text(s) => s.parse().ok(),
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            IntOrString::Text(s) => Some(s),
            IntOrString::Int(_) => None,
        }
    }
}

/// `kind`, `metadata` and, for lists, `items`: what every object has.
#[derive(Debug, Deserialize)]
struct Head {
    kind: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    metadata: Metadata,
    #[serde(default)]
    items: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) annotations: BTreeMap<String, Scalar>,
}

/// One object of a render: its identity and the part of it a check reads.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    /// `spec.replicas` of any kind (what an autoscaler may target), as written.
    pub(crate) replicas: Option<Value>,
    pub(crate) body: Body,
}

impl Object {
    /// `Kind/name`, as findings name objects.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// `Kind/name field`.
    pub(crate) fn at(&self, field: &str) -> String {
        format!("{} {field}", self.id())
    }
}

/// The part of an object the checks read, by kind.
#[derive(Debug)]
pub(crate) enum Body {
    /// Anything that runs a pod: Deployment, StatefulSet, DaemonSet,
    /// ReplicaSet, Job, CronJob, Pod.
    Workload {
        pod: Box<PodSpec>,
        pod_path: &'static str,
    },
    /// A KEDA ScaledObject or a HorizontalPodAutoscaler.
    Scaler(ScaleTargetRef),
    Service {
        annotations: BTreeMap<String, Scalar>,
        selector: BTreeMap<String, Scalar>,
    },
    ConfigMap {
        data: BTreeMap<String, Scalar>,
    },
    /// Only the keys: the values are not in the render in any useful form.
    Secret {
        keys: Vec<(&'static str, String)>,
    },
    /// A kind no check reads, or a workload without a pod template.
    Other,
}

/// `spec.replicas`, read from any kind.
#[derive(Debug, Deserialize)]
struct Scalable {
    spec: Option<ScalableSpec>,
}

#[derive(Debug, Deserialize)]
struct ScalableSpec {
    replicas: Option<Value>,
}

/// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job: `spec.template.spec`.
#[derive(Debug, Deserialize)]
struct TemplatedDoc {
    spec: Option<TemplatedSpec>,
}

#[derive(Debug, Deserialize)]
struct TemplatedSpec {
    template: Option<PodTemplate>,
}

#[derive(Debug, Deserialize)]
struct PodTemplate {
    spec: Option<PodSpec>,
}

#[derive(Debug, Deserialize)]
struct CronJobDoc {
    spec: Option<CronJobSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    job_template: Option<TemplatedDoc>,
}

#[derive(Debug, Deserialize)]
struct PodDoc {
    spec: Option<PodSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) containers: Vec<Container>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) volumes: Vec<Volume>,
    /// An integer to Kubernetes; anything else is reported.
    pub(crate) termination_grace_period_seconds: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Container {
    pub(crate) name: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) command: Option<Vec<Scalar>>,
    pub(crate) args: Option<Vec<Scalar>>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) env: Vec<EnvVar>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) env_from: Vec<EnvFromSource>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) ports: Vec<ContainerPort>,
    pub(crate) readiness_probe: Option<Probe>,
    pub(crate) liveness_probe: Option<Probe>,
    pub(crate) startup_probe: Option<Probe>,
    #[serde(default, deserialize_with = "or_default")]
    pub(crate) volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvVar {
    pub(crate) name: Option<String>,
    pub(crate) value: Option<Scalar>,
    pub(crate) value_from: Option<EnvVarSource>,
}

/// `valueFrom`: only a ConfigMap key can be looked up in the render; the
/// other sources (Secret, fieldRef, resourceFieldRef) are known only in the cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvVarSource {
    pub(crate) config_map_key_ref: Option<KeySelector>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeySelector {
    pub(crate) name: Option<String>,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvFromSource {
    pub(crate) prefix: Option<String>,
    pub(crate) config_map_ref: Option<SourceRef>,
    pub(crate) secret_ref: Option<SourceRef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SourceRef {
    pub(crate) name: Option<String>,
    pub(crate) optional: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    pub(crate) name: Option<String>,
    pub(crate) container_port: Option<IntOrString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Probe {
    pub(crate) http_get: Option<HttpGet>,
    pub(crate) tcp_socket: Option<TcpSocket>,
    /// Only whether it is there: the binary serves no gRPC health check.
    pub(crate) grpc: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HttpGet {
    pub(crate) path: Option<String>,
    pub(crate) port: Option<IntOrString>,
    pub(crate) scheme: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TcpSocket {
    pub(crate) port: Option<IntOrString>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VolumeMount {
    pub(crate) name: Option<String>,
    pub(crate) mount_path: Option<String>,
    pub(crate) sub_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Volume {
    pub(crate) name: Option<String>,
    pub(crate) config_map: Option<ConfigMapVolume>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfigMapVolume {
    pub(crate) name: Option<String>,
    pub(crate) items: Option<Vec<KeyToPath>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyToPath {
    pub(crate) key: Option<String>,
    pub(crate) path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ScalerDoc {
    spec: Option<ScalerSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScalerSpec {
    scale_target_ref: Option<ScaleTargetRef>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScaleTargetRef {
    pub(crate) name: Option<String>,
    /// `Deployment` when unset, for both KEDA and the HPA.
    pub(crate) kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ServiceDoc {
    spec: Option<ServiceSpec>,
}

#[derive(Debug, Deserialize)]
struct ServiceSpec {
    #[serde(default, deserialize_with = "or_default")]
    selector: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
struct ConfigMapDoc {
    #[serde(default, deserialize_with = "or_default")]
    data: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretDoc {
    #[serde(default, deserialize_with = "or_default")]
    data: BTreeMap<String, IgnoredAny>,
    #[serde(default, deserialize_with = "or_default")]
    string_data: BTreeMap<String, IgnoredAny>,
}

/// A document that could not be read as the object it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// `Kind/name`, or `document N` when even that is unreadable.
    pub(crate) id: String,
    /// serde's message (`invalid type: string "x", expected a sequence`).
    pub(crate) message: String,
}

/// The objects of a render: `List` kinds flattened, documents without a
/// kind (empty documents) skipped.
pub(crate) fn objects(docs: &[Yaml]) -> (Vec<Object>, Vec<Unreadable>) {
    let mut out = (Vec::new(), Vec::new());
    for (n, doc) in docs.iter().enumerate() {
        read_object(&to_json(doc), &format!("document {}", n + 1), &mut out);
    }
    out
}

fn read_object(value: &Value, shown: &str, out: &mut (Vec<Object>, Vec<Unreadable>)) {
    if value.is_null() {
        return; // an empty document (`---` at the end)
    }
    if !value.is_object() {
        // Checked first: serde would read a sequence as a struct, field by field.
        let message = "a YAML sequence or scalar, not a mapping".to_string();
        out.1.push(Unreadable { id: shown.to_string(), message });
        return;
    }
    let head = match Head::deserialize(value) {
        Ok(head) => head,
        Err(e) => {
            out.1.push(Unreadable { id: shown.to_string(), message: e.to_string() });
            return;
        }
    };
    let kind = head.kind.unwrap_or_default();
    if kind.ends_with("List")
        && let Some(items) = &head.items
    {
        for (i, item) in items.iter().enumerate() {
            read_object(item, &format!("{shown} items[{i}]"), out);
        }
        return;
    }
    if kind.is_empty() {
        return;
    }
    let name = head.metadata.name.unwrap_or_else(|| "<unnamed>".to_string());
    let namespace = head.metadata.namespace.unwrap_or_default();
    let body = match body(&kind, value, head.metadata.annotations) {
        Ok(body) => body,
        Err(e) => {
            out.1.push(Unreadable { id: format!("{kind}/{name}"), message: e.to_string() });
            Body::Other
        }
    };
    let replicas = Scalable::deserialize(value).ok().and_then(|s| s.spec?.replicas).filter(|r| !r.is_null());
    out.0.push(Object { kind, name, namespace, replicas, body });
}

fn body(kind: &str, value: &Value, annotations: BTreeMap<String, Scalar>) -> Result<Body, serde_json::Error> {
    let workload = |pod: Option<PodSpec>, pod_path| match pod {
        Some(pod) => Body::Workload { pod: Box::new(pod), pod_path },
        None => Body::Other,
    };
    let templated = |doc: TemplatedDoc| doc.spec.and_then(|s| s.template).and_then(|t| t.spec);
    Ok(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            workload(templated(TemplatedDoc::deserialize(value)?), "spec.template.spec")
        }
        "CronJob" => {
            let job = CronJobDoc::deserialize(value)?.spec.and_then(|s| s.job_template);
            workload(job.and_then(templated), "spec.jobTemplate.spec.template.spec")
        }
        "Pod" => workload(PodDoc::deserialize(value)?.spec, "spec"),
        "ScaledObject" | "HorizontalPodAutoscaler" => {
            Body::Scaler(ScalerDoc::deserialize(value)?.spec.and_then(|s| s.scale_target_ref).unwrap_or_default())
        }
        "Service" => Body::Service {
            annotations,
            selector: ServiceDoc::deserialize(value)?.spec.map(|s| s.selector).unwrap_or_default(),
        },
        "ConfigMap" => Body::ConfigMap { data: ConfigMapDoc::deserialize(value)?.data },
        "Secret" => {
            let doc = SecretDoc::deserialize(value)?;
            let data = doc.data.into_keys().map(|k| ("data", k));
            Body::Secret { keys: data.chain(doc.string_data.into_keys().map(|k| ("stringData", k))).collect() }
        }
        _ => Body::Other,
    })
}

#[cfg(test)]
mod tests {
    use yaml_rust2::YamlLoader;

    use super::*;

    fn read(yaml: &str) -> (Vec<Object>, Vec<Unreadable>) {
        let docs = YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("test YAML: {e}"));
        objects(&docs)
    }

    /// One object in, a one-line description of what was read out.
    fn describe(o: &Object) -> String {
        let what = match &o.body {
            Body::Workload { pod, pod_path } => {
                let c = pod.containers.first();
                format!(
                    "{pod_path} containers={} init={} image={:?} env={:?} ports={:?} ready={:?} grace={:?}",
                    pod.containers.len(),
                    pod.init_containers.len(),
                    c.and_then(|c| c.image.as_deref()),
                    c.map(|c| c
                        .env
                        .iter()
                        .map(|e| (e.name.clone(), e.value.as_ref().map(|v| v.to_string())))
                        .collect::<Vec<_>>()),
                    c.map(|c| c.ports.iter().map(|p| (p.name.clone(), p.container_port.clone())).collect::<Vec<_>>()),
                    c.and_then(|c| c.readiness_probe.as_ref()?.http_get.as_ref()?.path.clone()),
                    pod.termination_grace_period_seconds.as_ref().map(|s| s.to_string()),
                )
            }
            Body::Scaler(t) => format!("scales {:?}/{:?}", t.kind, t.name),
            Body::Service { annotations, selector } => format!("annotations={annotations:?} selector={selector:?}"),
            Body::ConfigMap { data } => {
                format!("data={:?}", data.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
            }
            Body::Secret { keys } => format!("keys={keys:?}"),
            Body::Other => "other".to_string(),
        };
        format!("{} ns={:?} replicas={:?}: {what}", o.id(), o.namespace, o.replicas)
    }

    #[test]
    fn objects_are_read_into_typed_fields() {
        // (manifest, what is read, unreadable objects)
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "kind: Deployment\nmetadata: {name: w, namespace: prod}\nspec:\n  replicas: 2\n  template:\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n        - image: sqsaga:1\n          env: [{name: A, value: 1.10}, {name: B, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n          ports: [{name: metrics, containerPort: 8080}]\n          readinessProbe: {httpGet: {path: /readyz, port: metrics}}\n",
                &[
                    "Deployment/w ns=\"prod\" replicas=Some(Number(2)): spec.template.spec containers=1 init=0 image=Some(\"sqsaga:1\") env=Some([(Some(\"A\"), Some(\"1.10\")), (Some(\"B\"), None)]) ports=Some([(Some(\"metrics\"), Some(Int(8080)))]) ready=Some(\"/readyz\") grace=Some(\"60\")",
                ],
                &[],
            ),
            (
                "kind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{image: x:1}], initContainers: [{image: y:2}]}}}}}\n",
                &[
                    "CronJob/c ns=\"\" replicas=None: spec.jobTemplate.spec.template.spec containers=1 init=1 image=Some(\"x:1\") env=Some([]) ports=Some([]) ready=None grace=None",
                ],
                &[],
            ),
            // `env:` with nothing after it is no env, not an error.
            (
                "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - image: x:1\n      env:\n",
                &[
                    "Pod/p ns=\"\" replicas=None: spec containers=1 init=0 image=Some(\"x:1\") env=Some([]) ports=Some([]) ready=None grace=None",
                ],
                &[],
            ),
            (
                "kind: ScaledObject\nmetadata: {name: s}\nspec: {scaleTargetRef: {name: w}}\n",
                &["ScaledObject/s ns=\"\" replicas=None: scales None/Some(\"w\")"],
                &[],
            ),
            (
                "kind: ConfigMap\nmetadata: {name: m}\ndata: {B: 30s, A: 8080, C: true}\n",
                &["ConfigMap/m ns=\"\" replicas=None: data=[\"A=8080\", \"B=30s\", \"C=true\"]"],
                &[],
            ),
            (
                "kind: Secret\nmetadata: {name: s}\ndata: {K: eA==}\nstringData: {L: x}\n",
                &["Secret/s ns=\"\" replicas=None: keys=[(\"data\", \"K\"), (\"stringData\", \"L\")]"],
                &[],
            ),
            (
                "kind: Service\nmetadata: {name: v, annotations: {prometheus.io/path: /metrics}}\nspec: {selector: {app: sqsaga}}\n",
                &[
                    "Service/v ns=\"\" replicas=None: annotations={\"prometheus.io/path\": Text(\"/metrics\")} selector={\"app\": Text(\"sqsaga\")}",
                ],
                &[],
            ),
            // Lists are flattened; empty documents skipped.
            (
                "kind: List\nitems:\n  - {kind: ConfigMap, metadata: {name: a}}\n---\n",
                &["ConfigMap/a ns=\"\" replicas=None: data=[]"],
                &[],
            ),
            // A checked field of the wrong type makes the object unreadable.
            (
                "kind: Deployment\nmetadata: {name: bad}\nspec: {template: {spec: {containers: oops}}}\n",
                &["Deployment/bad ns=\"\" replicas=None: other"],
                &["Deployment/bad: invalid type: string \"oops\", expected a sequence"],
            ),
            ("- just a list\n", &[], &["document 1: a YAML sequence or scalar, not a mapping"]),
        ];
        for (yaml, want, unreadable) in cases {
            let (objs, bad) = read(yaml);
            let got: Vec<String> = objs.iter().map(describe).collect();
            assert_eq!(got, *want, "{yaml}");
            let bad: Vec<String> = bad.iter().map(|u| format!("{}: {}", u.id, u.message)).collect();
            assert_eq!(bad, *unreadable, "{yaml}");
        }
    }

    #[test]
    fn ports_by_number_or_name() {
        assert_eq!(IntOrString::Int(8080).number(), Some(8080));
        assert_eq!(IntOrString::Text("8080".into()).number(), Some(8080));
        assert_eq!(IntOrString::Text("metrics".into()).number(), None);
        assert_eq!(IntOrString::Text("metrics".into()).name(), Some("metrics"));
    }
}
