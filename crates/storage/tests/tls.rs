//! TLS from the pool to the local stack's PostgreSQL, which offers TLS (not requires it) with
//! a certificate for 127.0.0.1/localhost signed by the stack's throwaway CA
//! (`SM_TLS_CA_FILE`). The server itself says whether a connection is encrypted
//! (`pg_stat_ssl`), so a client that silently fell back to plaintext would fail here.

use sm_storage::{PostgresConfig, StorageError, connect, ping};
use sm_telemetry::Secret;
use sm_testkit::{Stack, stack_from_env_file, unique};
use std::path::PathBuf;
use std::process::Command;

/// The stack's URL with `sslmode` (and any other parameter) replaced by `params`.
fn url_with(stack: &Stack, params: &str) -> String {
    let base = stack.postgres_url.split('?').next().unwrap();
    format!("{base}?{params}")
}

/// The stack's CA: every test here depends on it, so its absence is a failure.
fn stack_ca(stack: &Stack) -> String {
    let path = stack.vars.get("SM_TLS_CA_FILE").cloned().unwrap_or_else(|| {
        panic!("SM_TLS_CA_FILE is not in the stack env file: restart the stack with `deploy/local/stack up`")
    });
    assert!(std::path::Path::new(&path).is_file(), "{path} (SM_TLS_CA_FILE) is missing: run `deploy/local/stack up`");
    path
}

fn config(url: String, ca_file: &str) -> PostgresConfig {
    PostgresConfig { url: Secret(url), pool_size: 1, ca_file: ca_file.to_owned() }
}

/// Connects, and returns whether the server sees this connection as TLS.
async fn server_says_tls(config: &PostgresConfig) -> Result<bool, StorageError> {
    let pool = connect(config)?;
    let client = pool.get().await?;
    assert_eq!(client.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
    Ok(client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?.get(0))
}

/// The error of a connection that must not open.
async fn refused(config: &PostgresConfig) -> StorageError {
    match server_says_tls(config).await {
        Ok(tls) => panic!("connected (tls: {tls}), but should have been refused"),
        Err(error) => error,
    }
}

/// A self-signed CA that signed nothing the stack serves, made with openssl (which the stack
/// needs anyway); removed on drop.
struct OtherCa(PathBuf);

impl OtherCa {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("sm-storage-other-ca"));
        std::fs::create_dir_all(&dir).unwrap();
        let output = Command::new("openssl")
            .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=not the stack's CA"])
            .arg("-keyout")
            .arg(dir.join("ca-key.pem"))
            .arg("-out")
            .arg(dir.join("ca.pem"))
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
        Self(dir)
    }

    fn pem(&self) -> String {
        self.0.join("ca.pem").to_str().unwrap().to_owned()
    }
}

impl Drop for OtherCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn require_with_the_stack_ca_is_tls() {
    let stack = stack_from_env_file();
    let config = config(url_with(&stack, "sslmode=require"), &stack_ca(&stack));
    assert!(server_says_tls(&config).await.unwrap(), "sslmode=require, yet the server sees plaintext");
}

#[tokio::test]
async fn prefer_and_verify_full_with_the_stack_ca_are_tls() {
    let stack = stack_from_env_file();
    let ca = stack_ca(&stack);
    for mode in ["prefer", "verify-full"] {
        let config = config(url_with(&stack, &format!("sslmode={mode}&application_name=sm-tls-test")), &ca);
        assert!(server_says_tls(&config).await.unwrap(), "sslmode={mode}, yet the server sees plaintext");
    }
}

#[tokio::test]
async fn localhost_is_named_in_the_certificate() {
    let stack = stack_from_env_file();
    let url = url_with(&stack, "sslmode=verify-full").replace("@127.0.0.1:", "@localhost:");
    assert!(url.contains("@localhost:"), "the stack's URL is not on 127.0.0.1: {}", stack.postgres_url);
    assert!(server_says_tls(&config(url, &stack_ca(&stack))).await.unwrap());
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_certificate_is_refused() {
    let stack = stack_from_env_file();
    let other = OtherCa::new();
    let config = config(url_with(&stack, "sslmode=require"), &other.pem());
    let error = refused(&config).await;
    let message = error.to_string();
    assert!(matches!(error, StorageError::Tls { .. }), "{message}");
    assert!(message.contains("invalid peer certificate") && message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("SM_POSTGRES__CA_FILE"), "{message}");
    assert!(!message.contains(":sm@"), "the URL's credentials leaked: {message}");
    // The readiness probe says the same.
    let probe = ping(&connect(&config).unwrap()).await.unwrap_err();
    assert!(probe.contains("UnknownIssuer") && probe.contains("SM_POSTGRES__CA_FILE"), "{probe}");
}

#[tokio::test]
async fn prefer_does_not_fall_back_to_plaintext_when_the_certificate_fails() {
    // The system's roots (no CA file) do not know the stack's throwaway CA.
    let stack = stack_from_env_file();
    let error = refused(&config(url_with(&stack, "sslmode=prefer"), "")).await;
    assert!(matches!(error, StorageError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_name_is_refused() {
    // Reach the stack's address under a name its certificate does not carry: tokio-postgres
    // dials `hostaddr` and verifies against `host`.
    let stack = stack_from_env_file();
    let base = stack.postgres_url.split('?').next().unwrap();
    let at = base.find('@').unwrap() + 1;
    let port = base[at..].split(['/', ':']).nth(1).unwrap();
    let url = format!("{}not-the-stack.invalid:{port}/sm?hostaddr=127.0.0.1&sslmode=verify-full", &base[..at]);
    let error = refused(&config(url, &stack_ca(&stack))).await;
    let message = error.to_string();
    assert!(matches!(error, StorageError::Tls { .. }), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn require_against_a_server_without_tls_names_sslmode() {
    // A stand-in for a server with `ssl = off`: it answers the SSLRequest with 'N' (the
    // protocol's "no TLS here") and hangs up, so the stack's server is left as it is.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut ssl_request = [0; 8];
        socket.read_exact(&mut ssl_request).unwrap();
        assert_eq!(ssl_request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "not an SSLRequest");
        socket.write_all(b"N").unwrap();
    });
    let url = format!("postgres://sm:hunter2@127.0.0.1:{port}/sm?sslmode=require");
    let error = refused(&config(url, &stack_ca(&stack_from_env_file()))).await;
    server.join().unwrap();
    let message = error.to_string();
    assert!(matches!(error, StorageError::Tls { .. }), "{message}");
    assert!(message.contains("does not offer TLS") && message.contains("sslmode"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn disable_stays_plaintext() {
    let stack = stack_from_env_file();
    // The CA file is not even read.
    let config = config(url_with(&stack, "sslmode=disable"), "/nonexistent/ca.pem");
    assert!(!server_says_tls(&config).await.unwrap(), "sslmode=disable, yet the server sees TLS");
    // The env file's own URL is plaintext too (the demo's default).
    let default = PostgresConfig { url: Secret(stack.postgres_url.clone()), ..PostgresConfig::default() };
    assert!(!server_says_tls(&default).await.unwrap());
}
