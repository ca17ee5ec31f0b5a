//! Duplicate suppression survives a Redis restart (issue #10, item 5), on the real stack.
//!
//! The local stack runs Redis with an append-only file (`appendfsync everysec`), so a claim
//! Redis acknowledged before it went down, by a crash (SIGKILL) or a graceful stop, is still
//! there when it comes back, with its original expiry: a copy of the reading re-sent from
//! another Kafka position is still a duplicate, the original record is still itself, and the
//! window still ends when it would have. The README's "Duplicates" section states the
//! guarantee these tests hold the stack to.
//!
//! These tests restart the stack's shared Redis, which would disturb any other test of the
//! same binary that uses it, so they live alone in this file (cargo runs test binaries one
//! at a time) and take turns through [`SERIAL`]. [`RedisBack`] runs `stack start redis` when a
//! test ends, even by a failed assertion, so Redis is never left down. Only Redis: `stack up`
//! would also restart a Kafka that a test in another binary took down on purpose.

use sm_domain::{SensorId, Timestamp};
use sm_ingestion::dedup::Deduplicator;
use sm_kafka::Source;
use sm_testkit::{Stack, stack_from_env_file, unique};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One Redis restart at a time: the tests of this file run on parallel threads otherwise.
/// A tokio mutex, so a failed test does not poison it for the next.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `deploy/local/stack ARGS` on the stack that wrote the env file (its `SM_STACK_DIR`;
/// the script remembers that stack's ports). Stdout is dropped, stderr returned on failure.
fn stack_command(stack: &Stack, args: &[&str]) -> Result<(), String> {
    // At run time, like tests/deployment.rs: a test binary built in another clone sharing
    // the target dir must drive this clone's script.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test");
    let script = PathBuf::from(manifest_dir).join("../../deploy/local/stack");
    let state = stack.vars.get("SM_STACK_DIR").expect("SM_STACK_DIR in the stack env file; rerun `stack up`");
    let output = Command::new(&script)
        .args(args)
        .env("SM_STACK_DIR", state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("stack {args:?}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}

/// Brings Redis back up when dropped, whatever happened in between (a no-op if it is up).
struct RedisBack<'a>(&'a Stack);

impl Drop for RedisBack<'_> {
    fn drop(&mut self) {
        if let Err(error) = stack_command(self.0, &["start", "redis"]) {
            if std::thread::panicking() {
                eprintln!("could not bring redis back up: {error}");
            } else {
                panic!("could not bring redis back up: {error}");
            }
        }
    }
}

/// The server's `run_id`: a new one for every start of redis-server, so a test can tell that
/// it really restarted.
async fn redis_run_id(stack: &Stack) -> String {
    let client = redis::Client::open(stack.redis_url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut connection).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_else(|| panic!("no run_id in INFO server: {info}"))
        .trim()
        .to_owned()
}

/// `first_seen`, retried while Redis comes back (refused connections, `LOADING` while it
/// reads its append-only file), as the agent retries a transient error.
async fn first_seen_when_back(dedup: &mut Deduplicator, sensor: &SensorId, at: Timestamp, source: &Source<'_>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match dedup.first_seen(sensor, at, 1, source).await {
            Ok(first) => return first,
            Err(error) if Instant::now() < deadline => {
                eprintln!("redis not back yet: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("redis did not come back within 20 s: {error}"),
        }
    }
}

const ORIGINAL: Source<'static> = Source { topic: "sm.readings.raw.v1", partition: 1, offset: 10, key: None };
const RESENT: Source<'static> = Source { topic: "sm.readings.raw.v1", partition: 4, offset: 99, key: None };

#[tokio::test]
async fn a_duplicate_resent_after_redis_is_killed_is_still_suppressed_until_its_window_ends() {
    let _serial = SERIAL.lock().await;
    let stack = stack_from_env_file();
    let _back = RedisBack(&stack);
    // Real time throughout: the window is Redis's own expiry, on Redis's clock.
    let window = Duration::from_secs(10);
    let mut dedup = Deduplicator::connect(&stack.redis_url, window.as_secs()).await.unwrap();
    let sensor: SensorId = unique("sensor").into();
    let at = Timestamp::now();

    let claimed = Instant::now();
    assert!(dedup.first_seen(&sensor, at, 1, &ORIGINAL).await.unwrap(), "a fresh identity is first seen");
    // everysec: after a second the claim is on disk, so even a machine crash would keep it
    // (a process crash keeps it at once: it is in the page cache before Redis replies).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = redis_run_id(&stack).await;
    stack_command(&stack, &["kill", "redis"]).unwrap();
    stack_command(&stack, &["start", "redis"]).unwrap();

    assert!(!first_seen_when_back(&mut dedup, &sensor, at, &RESENT).await, "the copy re-sent after the crash");
    assert_ne!(redis_run_id(&stack).await, before, "redis was not restarted");
    assert!(dedup.first_seen(&sensor, at, 1, &ORIGINAL).await.unwrap(), "the original record, handled again");
    assert!(
        claimed.elapsed() < window,
        "the restart took {:?}, longer than the {window:?} window: nothing was shown",
        claimed.elapsed()
    );

    // The restart neither emptied the window nor restarted it: the expiry is the one the
    // claim set (the AOF logs it as an absolute time), so once it passes, a copy is new again.
    tokio::time::sleep((window + Duration::from_millis(500)).saturating_sub(claimed.elapsed())).await;
    assert!(dedup.first_seen(&sensor, at, 1, &RESENT).await.unwrap(), "a copy after the window ended");
}

#[tokio::test]
async fn a_duplicate_resent_after_redis_restarts_gracefully_is_still_suppressed() {
    let _serial = SERIAL.lock().await;
    let stack = stack_from_env_file();
    let _back = RedisBack(&stack);
    let mut dedup = Deduplicator::connect(&stack.redis_url, 600).await.unwrap();
    let sensor: SensorId = unique("sensor").into();
    let at = Timestamp::now();

    assert!(dedup.first_seen(&sensor, at, 1, &ORIGINAL).await.unwrap(), "a fresh identity is first seen");
    // No wait: on SIGTERM Redis writes and fsyncs the append-only file before it exits.
    let before = redis_run_id(&stack).await;
    stack_command(&stack, &["stop", "redis"]).unwrap();
    stack_command(&stack, &["start", "redis"]).unwrap();

    assert!(!first_seen_when_back(&mut dedup, &sensor, at, &RESENT).await, "the copy re-sent after the restart");
    assert_ne!(redis_run_id(&stack).await, before, "redis was not restarted");
    assert!(dedup.first_seen(&sensor, at, 1, &ORIGINAL).await.unwrap(), "the original record, handled again");
}
