//! `sqsaga fleet [--json]`: the orchestrator's fleet view (over its HTTP
//! port, or a persisted snapshot) as a table: per service the verdict,
//! fingerprints, what differs, quarantined instances.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use sqsaga_drift::FleetSnapshot;
use sqsaga_runtime::admin::client::Client;
use sqsaga_runtime::fleet::FLEET_PATH;

// ---------------------------------------------------------------------------
// `sqsaga fleet`

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The orchestrator's fleet view; default `http://<SQSAGA_HTTP_ADDR>/fleet`.
    #[arg(long)]
    url: Option<String>,
    /// Read a persisted snapshot instead (`<data dir>/fleet.json` of an embedded orchestrator).
    #[arg(long, conflicts_with = "url")]
    file: Option<PathBuf>,
    /// An orchestrator's admin API (`http://host:port`); token from SQSAGA_ADMIN_TOKEN.
    #[arg(long, conflicts_with_all = ["url", "file"])]
    server: Option<String>,
    /// Print the view as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The default URL: the orchestrator's HTTP address from the environment,
/// with a wildcard host replaced by loopback.
fn default_url() -> String {
    let addr = std::env::var("SQSAGA_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "127.0.0.1:");
    format!("http://{addr}{FLEET_PATH}")
}

pub async fn fleet(args: FleetArgs) -> Result<ExitCode> {
    let text = match (&args.file, &args.server) {
        (_, Some(server)) => Client::from_env(server).get("/api/v1/fleet").await?.to_string(),
        (Some(file), None) => {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
        }
        (None, None) => {
            let url = args.url.clone().unwrap_or_else(default_url);
            let (status, body) =
                http_get(&url).await.with_context(|| format!("cannot reach the orchestrator at {url}"))?;
            if status != 200 {
                bail!("{url} answered {status}: {}", body.chars().take(200).collect::<String>());
            }
            body
        }
    };
    let value: Value = serde_json::from_str(&text).context("the fleet view is not JSON")?;
    if args.json {
        println!("{}", serde_json::to_string(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot: FleetSnapshot =
        serde_json::from_value(value.clone()).context("the fleet view has an unknown shape")?;
    let steps: BTreeMap<String, u64> = value
        .get("steps_by_nonconforming_worker")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    print!("{}", sqsaga_runtime::fleet_table::render(&snapshot, &steps));
    Ok(ExitCode::SUCCESS)
}

/// GET `url` with a real HTTP client (hyper's, which the OTLP exporter
/// already brings): status and body.
async fn http_get(url: &str) -> Result<(u16, String)> {
    use opentelemetry_http::{Bytes, HttpClient, Request};
    let client = opentelemetry_http::hyper::HyperClient::with_default_connector(Duration::from_secs(10), None);
    let request = Request::get(url).body(Bytes::new()).with_context(|| format!("`{url}` is not a valid URL"))?;
    let response = client.send_bytes(request).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((response.status().as_u16(), String::from_utf8_lossy(response.body()).into_owned()))
}
