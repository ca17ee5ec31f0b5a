//! Operating a service: JSON logs, Prometheus metrics, `/healthz` and `/readyz`, OTLP traces,
//! layered configuration and the shutdown signal. Every service uses it the same way, so SREs
//! find the same endpoints and log shape everywhere.
//!
//! Layout:
//! - [`config`]: defaults → optional TOML file (`SM_CONFIG`) → `SM_<SECTION>__<FIELD>` env;
//! - [`health`]: readiness flags the service sets, and the HTTP endpoints that report them;
//! - [`tracing_init`](init): the subscriber (JSON or text) and OTLP export when configured;
//! - [`shutdown_signal`]: SIGTERM or SIGINT.

pub mod config;
pub mod health;

pub use config::{ConfigError, Secret, load_config};
pub use health::{Health, serve_http};

use opentelemetry::trace::TracerProvider as _;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Logging, metrics and tracing settings (`SM_TELEMETRY__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (default; one object per line, for log shippers) or `text` (for a terminal).
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info,sm_kafka=debug`. `RUST_LOG` overrides it.
    pub log_filter: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`. Port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// OTLP/gRPC collector endpoint. Empty: read `OTEL_EXPORTER_OTLP_ENDPOINT`; unset: no export.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            otlp_endpoint: String::new(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Errors of starting telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{filter}`: {source}")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter for {endpoint}: {source}; check OTEL_EXPORTER_OTLP_ENDPOINT")]
    Otlp {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    #[error("cannot bind the metrics/health endpoint on {addr}: {source}; set SM_TELEMETRY__HTTP_ADDR")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging (and OTLP export when an endpoint is configured) for `service`.
/// Also installs the W3C trace-context propagator used on Kafka headers.
pub fn init(service: &'static str, config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_filter.clone());
    let filter = EnvFilter::try_new(&filter_text)
        .map_err(|source| TelemetryError::LogFilter { filter: filter_text.clone(), source })?;
    let fmt = match config.log_format {
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).boxed()
        }
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let endpoint = if config.otlp_endpoint.is_empty() {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default()
    } else {
        config.otlp_endpoint.clone()
    };
    let (otel, provider) = if endpoint.is_empty() {
        (None, None)
    } else {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Otlp { endpoint, source })?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
        opentelemetry::global::set_tracer_provider(provider.clone());
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// What every service's `main` starts first, kept alive for the life of the process.
pub struct ServiceTelemetry {
    /// Readiness (`/readyz`); the checks named at start begin not ready.
    pub health: Health,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: std::net::SocketAddr,
    _guard: TelemetryGuard,
    _http: tokio::task::JoinHandle<()>,
}

/// Starts a service's telemetry: logs (and traces), a start line with its whole
/// configuration (secrets are redacted by [`Secret`]), readiness with `checks` not ready yet,
/// and the HTTP endpoints. One place, so every service starts the same way.
pub async fn start_service(
    service: &'static str,
    config: &TelemetryConfig,
    settings: &impl std::fmt::Debug,
    checks: &[&'static str],
) -> Result<ServiceTelemetry, TelemetryError> {
    let guard = init(service, config)?;
    tracing::info!(config = ?settings, "starting");
    let health = Health::new();
    for check in checks {
        health.set(*check, false);
    }
    let (http_addr, http) = serve_http(config.http_addr, health.clone(), std::future::pending()).await?;
    tracing::info!(%http_addr, "serving /metrics /healthz /readyz");
    Ok(ServiceTelemetry { health, http_addr, _guard: guard, _http: http })
}

/// Completes on SIGTERM (how orchestrators stop a service) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
