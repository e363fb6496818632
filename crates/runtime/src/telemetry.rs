//! Trace export over OTLP (HTTP/protobuf), only when an endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT` / `otlp_endpoint`); without one
//! nothing here is built and nothing leaves the process.
//!
//! The worker and orchestrator open a tracing span per command and per saga
//! event, with the saga's `trace_id`; [`layer`] turns those spans into
//! OpenTelemetry spans and installs the protocol's span linker, so each span
//! joins the saga's distributed trace (the `traceparent` its message
//! carried). Spans are batched on the SDK's own thread; the HTTP requests run
//! on the process's tokio runtime (see [`OnRuntime`]). [`shutdown`] flushes
//! what is left when the process exits.
//!
//! Only plain `http://` collector endpoints are supported (a node-local or
//! in-cluster collector, port 4318): this build carries no TLS client for
//! telemetry, and says so at start rather than failing silently.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sqsaga_protocol::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The OTLP path of traces, appended to the configured base endpoint as the
/// OpenTelemetry spec says for `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const TRACES_PATH: &str = "/v1/traces";

/// How long one export request may take; also bounds the flush at exit.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider, kept for the flush at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not a plain-HTTP URL this build can reach.
    #[error("otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) `{endpoint}`: {why}")]
    Endpoint {
        /// The configured value.
        endpoint: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The exporter rejected its configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
    /// Spans were built outside a tokio runtime (a bug: processes start it first).
    #[error("trace export needs the tokio runtime: {0}")]
    NoRuntime(String),
}

/// `<endpoint>/v1/traces`, checked.
pub fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let fail = |why| TelemetryError::Endpoint { endpoint: endpoint.to_string(), why };
    if endpoint.starts_with("https://") {
        return Err(fail(
            "https is not supported by this build's trace exporter; point it at a collector's plain-HTTP OTLP port (4318)",
        ));
    }
    if !endpoint.starts_with("http://") || endpoint.len() <= "http://".len() {
        return Err(fail("expected an http:// URL such as http://otel-collector:4318"));
    }
    Ok(format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/')))
}

/// An OpenTelemetry layer exporting to `endpoint` as `service`, and the
/// span linker installed. Call once, inside the tokio runtime.
pub fn layer<S>(endpoint: &str, service: &str) -> Result<impl Layer<S> + Send + Sync + 'static, TelemetryError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let url = traces_url(endpoint)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| TelemetryError::NoRuntime(e.to_string()))?;
    let client = OnRuntime { client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None), runtime };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Build(e.to_string()))?;
    let resource = Resource::builder().with_service_name(service.to_string()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("sqsaga");
    // A second call (tests) keeps the first provider; its spans still export.
    let _ = PROVIDER.set(provider);
    sqsaga_protocol::trace::install_span_linker(link);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Exports the spans still buffered and stops the exporter. Call from a
/// thread that is not a runtime worker while the runtime is still alive
/// (`main`, after `block_on`): the export itself runs on the runtime.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT * 2)
    {
        eprintln!("warning: trace export did not finish at exit: {e}");
    }
}

/// Makes `span` a child of the remote span `parent` names: the protocol's
/// span linker, so library spans join the saga's trace.
fn link(span: &tracing::Span, parent: &TraceParent) {
    let flags = if parent.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.span_id_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    // Fails only if the span was already started or is disabled; the span
    // then keeps its own trace, which costs the link, not the work.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The hyper client, run on the process's tokio runtime. The SDK's batch
/// processor exports from its own plain thread, where hyper (which needs a
/// tokio reactor) cannot run; the request is spawned onto the runtime and
/// its result awaited, which works from any executor.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        match self.runtime.spawn(async move { client.send_bytes(request).await }).await {
            Ok(result) => result,
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_otlp_path() {
        assert_eq!(traces_url("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/").unwrap(), "http://127.0.0.1:4318/v1/traces");
        let https = traces_url("https://collector:4318").unwrap_err().to_string();
        assert!(https.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && https.contains("https is not supported"), "{https}");
        assert!(traces_url("collector:4318").is_err());
    }
}
