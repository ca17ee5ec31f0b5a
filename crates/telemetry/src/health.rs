//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz` (every
//! dependency the service declared is reachable). Orchestrators restart on `/healthz` and route
//! on `/readyz`, so the two must mean different things.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Readiness of each named check (`kafka`, `postgres`, an agent's progress, ...), with why
/// it is not ready. Cloning shares the state. Every change is mirrored in the
/// `sm_health_ready{check}` gauge, so a dashboard shows which check failed.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

fn ready_gauge() -> &'static prometheus::IntGaugeVec {
    static GAUGE: std::sync::OnceLock<prometheus::IntGaugeVec> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("sm_health_ready", "1 when the named readiness check passes, 0 when it fails"),
            &["check"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(gauge.clone()));
        gauge
    })
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether `check` currently passes. Declaring it not ready at start makes
    /// `/readyz` wait for it.
    pub fn set(&self, check: impl Into<String>, ready: bool) {
        self.update(check.into(), if ready { None } else { Some("unavailable".to_owned()) });
    }

    /// Marks `check` failed, with the reason `/readyz` shows.
    pub fn set_unavailable(&self, check: impl Into<String>, reason: impl Into<String>) {
        self.update(check.into(), Some(reason.into()));
    }

    fn update(&self, check: String, failure: Option<String>) {
        ready_gauge().with_label_values(&[check.as_str()]).set(i64::from(failure.is_none()));
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).insert(check, failure);
    }

    /// True when every declared check passes.
    pub fn is_ready(&self) -> bool {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).values().all(Option::is_none)
    }

    /// One line per check: `name: ok` or `name: unavailable: why`.
    pub fn report(&self) -> String {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks
            .iter()
            .map(|(name, failure)| match failure {
                None => format!("{name}: ok\n"),
                Some(reason) if reason == "unavailable" => format!("{name}: unavailable\n"),
                Some(reason) => format!("{name}: unavailable: {reason}\n"),
            })
            .collect()
    }

    /// Runs `check` every `interval` until the process ends, keeping `name` up to date: for a
    /// dependency (PostgreSQL, Redis) that must be reported down even while nothing uses it.
    pub fn probe<F, Fut>(
        &self,
        name: &'static str,
        interval: std::time::Duration,
        check: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let outcome = match tokio::time::timeout(interval.max(std::time::Duration::from_secs(1)), check()).await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "no answer within {} ms",
                        interval.max(std::time::Duration::from_secs(1)).as_millis()
                    )),
                };
                match outcome {
                    Ok(()) => health.set(name, true),
                    Err(reason) => {
                        tracing::warn!(check = name, reason, "readiness probe failed");
                        health.set_unavailable(name, reason);
                    }
                }
            }
        })
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
        health.set_unavailable("postgres", "connection refused");
        let down = get("/readyz").await;
        assert!(
            down.starts_with("HTTP/1.1 503") && down.contains("postgres: unavailable: connection refused"),
            "{down}"
        );
        assert!(get("/metrics").await.contains("sm_health_ready{check=\"postgres\"} 0"));
        health.set("postgres", true);
        prometheus::register_int_counter!("sm_test_events_total", "test").unwrap().inc();
        assert!(get("/metrics").await.contains("sm_test_events_total 1"));
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_probe_reports_a_dependency_down_and_back() {
        let health = Health::new();
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        let _probe = health.probe("redis", Duration::from_millis(20), move || {
            let up = flag.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("connection refused".to_owned()) } }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!health.is_ready());
        assert_eq!(health.report(), "redis: unavailable: connection refused\n");
        up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(health.is_ready(), "{}", health.report());
    }
}
