//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz` (every
//! dependency the service declared is reachable). Orchestrators restart on `/healthz` and route
//! on `/readyz`, so the two must mean different things.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Readiness of each named dependency (`kafka`, `postgres`, ...). Cloning shares the state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether `dependency` is currently usable. Declaring it not ready at start makes
    /// `/readyz` wait for it.
    pub fn set(&self, dependency: &'static str, ready: bool) {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).insert(dependency, ready);
    }

    /// True when every declared dependency is ready.
    pub fn is_ready(&self) -> bool {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).values().all(|ready| *ready)
    }

    fn report(&self) -> String {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.iter().map(|(name, ready)| format!("{name}: {}\n", if *ready { "ok" } else { "unavailable" })).collect()
    }
}

/// Binds `addr` and serves the three endpoints until `shutdown` completes. Returns the bound
/// address (useful with port 0) and the server task.
pub async fn serve_http(
    addr: SocketAddr,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), crate::TelemetryError> {
    let ready = health.clone();
    let app = Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get(move || {
            let health = ready.clone();
            async move {
                let status = if health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, health.report())
            }
        }),
    );
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| crate::TelemetryError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| crate::TelemetryError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %error, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

async fn metrics() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            String::from_utf8_lossy(&body).into_owned(),
        ),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_declared_dependencies() {
        let health = Health::new();
        health.set("kafka", false);
        let (addr, _task) =
            serve_http("127.0.0.1:0".parse().unwrap(), health.clone(), std::future::pending()).await.unwrap();
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get("/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("kafka: unavailable"));
        health.set("kafka", true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        prometheus::register_int_counter!("sm_test_events_total", "test").unwrap().inc();
        assert!(get("/metrics").await.contains("sm_test_events_total 1"));
    }
}
