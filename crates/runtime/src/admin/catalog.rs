//! `/api/v1/definitions` (the loaded definitions: list with the versions
//! that have unfinished sagas, one as YAML and as a graph) and
//! `/api/v1/fleet` (the drift guard's view).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::definition::SagaDefinition;
use sqsaga_core::graph::{Graph, graph};
use sqsaga_core::machine::SagaStatus;
use utoipa::{IntoParams, ToSchema};
use yaml_rust2::{Yaml, YamlEmitter};

use super::sagas::SCAN_LIMIT;
use super::{Admin, ApiError, ApiResult, ErrorBody, Role};

/// One loaded definition version.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionRow {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// Step names, in order.
    pub steps: Vec<String>,
    /// Sagas of this version not finished (running, compensating or
    /// needing an operator), among the newest the store lists.
    pub unfinished: u64,
}

/// The loaded definitions, with the versions that still have sagas in flight.
#[utoipa::path(get, path = "/api/v1/definitions", tag = "definitions",
    responses(
        (status = 200, description = "Every loaded definition version", body = Vec<DefinitionRow>),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_definitions(State(admin): State<Admin>, headers: HeaderMap) -> ApiResult<Vec<DefinitionRow>> {
    admin.caller(&headers, Role::Read)?;
    let mut unfinished: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for status in [SagaStatus::Running, SagaStatus::Compensating, SagaStatus::NeedsOperator] {
        for s in admin.store.list(Some(status), SCAN_LIMIT).await? {
            *unfinished.entry((s.saga, s.version)).or_default() += 1;
        }
    }
    let rows = admin
        .definitions
        .all()
        .iter()
        .map(|d| DefinitionRow {
            name: d.name.clone(),
            version: d.version,
            description: d.description.clone(),
            steps: d.steps.iter().map(|s| s.name.clone()).collect(),
            unfinished: unfinished.get(&(d.name.clone(), d.version)).copied().unwrap_or(0),
        })
        .collect();
    Ok(Json(rows))
}

/// A node of a definition's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNode {
    /// `saga_start`, `stepN`, `compN`, `saga_completed`, `saga_compensated`, `needs_operator`.
    pub id: String,
    /// `start`, `step`, `compensation`, `completed`, `compensated`, `needs_operator`.
    pub kind: String,
    /// The step's index (step and compensation nodes).
    pub step: Option<usize>,
    pub label: Vec<String>,
}

/// An edge of a definition's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// `ok`, `failed`, `timeout`, `exhausted`; absent: unconditional.
    pub label: Option<String>,
    /// Taken only in doubt (timeout) or exhaustion.
    pub dotted: bool,
}

/// One definition: as YAML, and as nodes and edges.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionView {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// The definition as YAML (every step's settings spelled out, defaults applied).
    pub yaml: String,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// The definition's name and version in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DefinitionKey {
    /// Definition name.
    name: String,
    /// Definition version.
    version: u32,
}

fn view(def: &SagaDefinition) -> DefinitionView {
    let Graph { nodes, edges } = graph(def);
    let kind = |k| serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    DefinitionView {
        name: def.name.clone(),
        version: def.version,
        description: def.description.clone(),
        yaml: to_yaml(&def.document()),
        nodes: nodes
            .into_iter()
            .map(|n| GraphNode { id: n.id, kind: kind(n.kind), step: n.step, label: n.label })
            .collect(),
        edges: edges
            .into_iter()
            .map(|e| GraphEdge { from: e.from, to: e.to, label: e.label, dotted: e.dotted })
            .collect(),
    }
}

/// One definition version, as YAML and as a graph.
#[utoipa::path(get, path = "/api/v1/definitions/{name}/{version}", tag = "definitions", params(DefinitionKey),
    responses(
        (status = 200, description = "The definition", body = DefinitionView),
        (status = 400, description = "A version that is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not loaded", body = ErrorBody),
    )
)]
pub async fn get_definition(
    State(admin): State<Admin>,
    headers: HeaderMap,
    key: Result<Path<DefinitionKey>, axum::extract::rejection::PathRejection>,
) -> ApiResult<DefinitionView> {
    admin.caller(&headers, Role::Read)?;
    let Path(DefinitionKey { name, version }) = key.map_err(ApiError::bad_request)?;
    let def = admin
        .definitions
        .get(&name, version)
        .ok_or_else(|| ApiError::not_found(format!("no definition {name} v{version} is loaded")))?;
    Ok(Json(view(&def)))
}

/// JSON as block YAML.
fn to_yaml(value: &Value) -> String {
    fn convert(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(convert).collect()),
            Value::Object(o) => Yaml::Hash(
                o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (Yaml::String(k.clone()), convert(v))).collect(),
            ),
        }
    }
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    if emitter.dump(&convert(value)).is_err() {
        return String::new();
    }
    out.strip_prefix("---\n").map(str::to_string).unwrap_or(out) + "\n"
}

/// The fleet view: per service the verdict, fingerprints and what differs,
/// instances (stale, quarantined), reasons.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet",
    responses(
        (status = 200, description = "The drift guard's view (the shape of `GET /fleet`)", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn fleet(State(admin): State<Admin>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    admin.caller(&headers, Role::Read)?;
    Ok(Json(admin.fleet.render()))
}
