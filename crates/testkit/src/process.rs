//! Service binaries as separate processes, for end-to-end tests and benchmarks: found in the
//! target directory next to the test or bench executable, started with the stack's env,
//! waited for on `/readyz`, killed with SIGKILL or stopped with SIGTERM.

use crate::Stack;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap(); // <target>/<profile>/deps/<test>
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; make test does)",
        path.display()
    );
    path
}

/// Runs `smctl ARGS` against the stack and asserts it succeeded (e.g. `["topics", "create"]`).
pub fn smctl(stack: &Stack, args: &[&str]) {
    let status = Command::new(binary("smctl")).envs(&stack.vars).args(args).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "smctl {args:?} failed: {status}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service process, restartable with the same settings.
pub struct Service {
    pub name: &'static str,
    env: Vec<(String, String)>,
    pub http_port: u16,
    child: Option<Child>,
}

impl Service {
    pub fn start(name: &'static str, stack: &Stack, extra: &[(&str, String)]) -> Self {
        let http_port = free_port();
        let mut env: Vec<(String, String)> = stack.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("SM_TELEMETRY__HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")));
        env.push(("SM_TELEMETRY__LOG_FILTER".into(), "warn".into()));
        env.push(("SM_KAFKA__INSTANCE_ID".into(), "e2e".into()));
        env.push(("SM_KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut service = Self { name, env, http_port, child: None };
        service.spawn();
        service
    }

    pub fn spawn(&mut self) {
        let child = Command::new(binary(self.name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_ok(self.http_port, "/readyz") {
            assert!(Instant::now() < deadline, "{} not ready within 60 s", self.name);
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited during start: {status}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no commit, no abort, no goodbye to the group.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("{} did not stop within 30 s of SIGTERM", self.name);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some_and(|response| response.starts_with("HTTP/1.1 200"))
}

/// The whole HTTP/1.1 response (status line, headers, body) to `GET path`, if any came.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    (!response.is_empty()).then_some(response)
}

/// Polls `/readyz` until its status line starts with `status` (e.g. `"HTTP/1.1 503"`), for
/// at most `within`; returns the response and how long it took, or panics with the last one.
pub fn wait_readyz(port: u16, status: &str, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < within {
        if let Some(response) = http_get(port, "/readyz") {
            if response.starts_with(status) {
                return (response, started.elapsed());
            }
            last = Some(response);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/readyz on port {port} did not answer {status} within {within:?}; last answer: {last:?}");
}

/// Polls `/readyz` until it answers 503 with a body containing `needle`, for at most `within`.
pub fn wait_unready_because(port: u16, needle: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let (down, _) =
            wait_readyz(port, "HTTP/1.1 503", within.saturating_sub(started.elapsed()).max(Duration::from_secs(1)));
        if down.contains(needle) {
            return down;
        }
        assert!(started.elapsed() < within, "/readyz never said {needle:?} within {within:?}: {down}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every sample of metric `name` on the service's `/metrics`: `(labels, value)`.
pub fn scrape(port: u16, name: &str) -> Vec<(String, f64)> {
    let Some(response) = http_get(port, "/metrics") else { return Vec::new() };
    response
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series[name.len()..].to_owned(), value.parse().ok()?))
        })
        .collect()
}
