//! Is the agent making progress, and how far behind is it? Pure bookkeeping, fed by the
//! runtime loop (assignments, records received, commits, retries) and by librdkafka's
//! statistics (end offsets), and read by the runtime's watchdog, which turns it into the lag
//! metric and `/readyz`.
//!
//! Lag is counted from what *this runtime* committed (Kafka transaction or projection store),
//! never from librdkafka's `consumer_lag`: offsets committed through a transaction or kept in
//! PostgreSQL are invisible to the consumer, which then reports the whole partition as lag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// End offsets of one partition as librdkafka's statistics last reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOffsets {
    /// Last stable offset: the end a `read_committed` consumer can reach.
    pub stable: i64,
    /// Next offset the fetcher will ask for.
    pub fetch_next: i64,
    /// Records fetched but not yet given to the application.
    pub queued: i64,
    /// Offset committed in Kafka as the consumer last fetched it (at assignment).
    pub kafka_committed: i64,
}

#[derive(Debug, Clone)]
struct PartitionProgress {
    /// Next offset committed by this runtime (or stored with a projection's rows).
    committed: Option<i64>,
    /// Last record handed to the loop + 1.
    received: Option<i64>,
    /// The first record handed to the loop since assignment: where consuming started, the
    /// best known committed position before the first commit.
    first_received: Option<i64>,
    end: Option<EndOffsets>,
    /// When the committed offset last moved, or the partition was last caught up.
    last_advance: Instant,
}

/// A record being retried after transient errors.
#[derive(Debug, Clone)]
struct Retry {
    since: Instant,
    record: String,
    error: String,
}

/// The progress of one runtime's assigned partitions.
#[derive(Debug, Default)]
pub struct Progress {
    partitions: BTreeMap<TopicPartition, PartitionProgress>,
    retrying: Option<Retry>,
    kafka_error: Option<String>,
}

/// What the watchdog reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Records not yet committed, per assigned partition whose end is known.
    pub lag: Vec<(TopicPartition, i64)>,
    /// Partitions with records waiting whose committed offset has not moved for too long.
    pub stalled: Vec<(TopicPartition, i64, Duration)>,
    /// Why the runtime is not making progress, if it is not.
    pub unready: Option<String>,
}

impl Progress {
    pub fn assigned(&mut self, partition: TopicPartition, now: Instant) {
        self.partitions.entry(partition).or_insert(PartitionProgress {
            committed: None,
            received: None,
            first_received: None,
            end: None,
            last_advance: now,
        });
    }

    pub fn revoked(&mut self, partition: &TopicPartition) {
        self.partitions.remove(partition);
    }

    pub fn is_assigned(&self, partition: &TopicPartition) -> bool {
        self.partitions.contains_key(partition)
    }

    /// The loop received the record at `offset`.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.get_mut(topic, partition) {
            p.received = Some(p.received.map_or(offset + 1, |r| r.max(offset + 1)));
            p.first_received.get_or_insert(offset);
        }
    }

    /// `next` is now the committed position of the partition (after a commit, or as read back
    /// from where offsets are kept).
    pub fn committed(&mut self, topic: &str, partition: i32, next: i64, now: Instant) {
        if let Some(p) = self.get_mut(topic, partition) {
            if p.committed.is_none_or(|c| next > c) {
                p.last_advance = now;
            }
            p.committed = Some(next);
        }
    }

    /// Latest end offsets from librdkafka's statistics.
    pub fn end_offsets(&mut self, topic: &str, partition: i32, end: EndOffsets) {
        if let Some(p) = self.get_mut(topic, partition) {
            p.end = Some(end);
        }
    }

    /// A record failed transiently and will be tried again.
    pub fn retrying(&mut self, record: String, error: String, now: Instant) {
        match &mut self.retrying {
            Some(retry) if retry.record == record => retry.error = error,
            _ => self.retrying = Some(Retry { since: now, record, error }),
        }
    }

    /// The record (or commit) being retried went through.
    pub fn retried(&mut self) {
        self.retrying = None;
    }

    /// The consumer reported an error (broker unreachable, ...); `None` once records flow again.
    pub fn kafka_error(&mut self, error: Option<String>) {
        self.kafka_error = error;
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionProgress> {
        self.partitions.iter_mut().find(|((t, p), _)| *p == partition && t == topic).map(|(_, v)| v)
    }

    /// Lag per partition, stalled partitions, and whether the runtime is ready. A partition is
    /// stalled when records wait and its committed offset has not moved for `stall_after`.
    pub fn report(&mut self, now: Instant, stall_after: Duration) -> Report {
        let mut lag = Vec::new();
        let mut stalled = Vec::new();
        for (tp, p) in &mut self.partitions {
            let kafka_committed = p.end.map(|e| e.kafka_committed).filter(|c| *c >= 0);
            let Some(committed) = p.committed.max(kafka_committed).or(p.first_received) else { continue };
            // Statistics stop while the loop is stuck inside one record (nothing polls the
            // consumer): what was received is then the best known end.
            // An empty partition has no stable offset in the statistics until a record is
            // written: the fetch position is then its end.
            let end_offset = p.end.and_then(|e| [e.stable, e.fetch_next].into_iter().find(|o| *o >= 0));
            let stable = end_offset.max(p.received);
            let Some(stable) = stable else { continue };
            // Read to the end, nothing queued, everything received committed: the offsets left
            // between the commit and the end are transaction markers, not records.
            let received_all = p.received.is_none_or(|r| r <= committed);
            let caught_up =
                received_all && p.end.is_none_or(|e| e.queued <= 0 && e.fetch_next >= 0 && e.fetch_next >= e.stable);
            let records = if caught_up { 0 } else { (stable - committed).max(0) };
            if records == 0 {
                p.last_advance = now;
            } else if now.duration_since(p.last_advance) >= stall_after {
                stalled.push((tp.clone(), records, now.duration_since(p.last_advance)));
            }
            lag.push((tp.clone(), records));
        }
        let mut reasons = Vec::new();
        if let Some(error) = &self.kafka_error {
            reasons.push(format!("kafka: {error}"));
        }
        if let Some(retry) = &self.retrying {
            reasons.push(format!(
                "retrying {} for {} s: {}",
                retry.record,
                now.duration_since(retry.since).as_secs(),
                retry.error
            ));
        }
        for ((topic, partition), records, for_how_long) in &stalled {
            reasons.push(format!(
                "{topic}/{partition} has not advanced for {} s with {records} records waiting",
                for_how_long.as_secs()
            ));
        }
        let unready = (!reasons.is_empty()).then(|| reasons.join("; "));
        Report { lag, stalled, unready }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        ("in".to_owned(), partition)
    }

    fn end(stable: i64, fetch_next: i64, queued: i64) -> EndOffsets {
        EndOffsets { stable, fetch_next, queued, kafka_committed: -1001 }
    }

    const STALL: Duration = Duration::from_secs(30);

    #[test]
    fn lag_counts_from_this_runtimes_commits_not_the_consumers() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(0), t0);
        progress.end_offsets("in", 0, end(12_000_000, 12_000_000, 0));
        assert_eq!(progress.report(t0, STALL).lag, vec![], "no commit known yet: no figure, not a guess");
        progress.received("in", 0, 11_999_999);
        progress.committed("in", 0, 12_000_000, t0);
        let report = progress.report(t0, STALL);
        assert_eq!(report.lag, vec![(tp(0), 0)]);
        assert_eq!(report.unready, None);
    }

    #[test]
    fn trailing_transaction_markers_are_not_lag() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(0), t0);
        // Records 0..=9, commit marker at 10: the end is 11, the last record's next is 10.
        progress.received("in", 0, 9);
        progress.committed("in", 0, 10, t0);
        progress.end_offsets("in", 0, end(11, 11, 0));
        assert_eq!(progress.report(t0, STALL).lag, vec![(tp(0), 0)]);
        // Still fetching: the gap counts (an upper bound while catching up).
        progress.end_offsets("in", 0, end(11, 8, 2));
        assert_eq!(progress.report(t0, STALL).lag, vec![(tp(0), 1)]);
    }

    #[test]
    fn kafkas_committed_offset_seeds_an_agents_partition() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(3), t0);
        progress.end_offsets("in", 3, EndOffsets { stable: 500, fetch_next: 100, queued: 50, kafka_committed: 100 });
        assert_eq!(progress.report(t0, STALL).lag, vec![(tp(3), 400)]);
    }

    #[test]
    fn a_partition_with_records_waiting_and_no_commit_is_stalled() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(4), t0);
        progress.committed("in", 4, 100, t0);
        progress.end_offsets("in", 4, end(160, 160, 0));
        progress.received("in", 4, 159);
        assert_eq!(progress.report(t0 + Duration::from_secs(29), STALL).unready, None);
        let report = progress.report(t0 + Duration::from_secs(31), STALL);
        assert_eq!(report.stalled.len(), 1);
        let reason = report.unready.unwrap();
        assert!(reason.contains("in/4 has not advanced for 31 s with 60 records waiting"), "{reason}");
        // It moves again: ready.
        progress.committed("in", 4, 160, t0 + Duration::from_secs(32));
        assert_eq!(progress.report(t0 + Duration::from_secs(33), STALL).unready, None);
    }

    #[test]
    fn a_loop_stuck_inside_a_record_is_stalled_without_fresh_statistics() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(5), t0);
        progress.committed("in", 5, 10, t0);
        progress.end_offsets("in", 5, end(10, 10, 0)); // the last statistics: caught up
        progress.received("in", 5, 12); // then records 10..=12 arrived, and record 10 hangs
        let report = progress.report(t0 + STALL, STALL);
        assert_eq!(report.lag, vec![(tp(5), 3)]);
        assert_eq!(report.stalled.len(), 1, "{report:?}");
    }

    #[test]
    fn before_the_first_commit_consuming_started_at_the_first_record_received() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(6), t0);
        progress.received("in", 6, 40);
        progress.received("in", 6, 99);
        let report = progress.report(t0 + STALL, STALL);
        assert_eq!(report.lag, vec![(tp(6), 60)]);
        assert_eq!(report.stalled.len(), 1);
    }

    #[test]
    fn an_empty_partition_has_no_lag() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(7), t0);
        progress.committed("in", 7, 0, t0);
        progress.end_offsets("in", 7, end(-1001, 0, 0));
        assert_eq!(progress.report(t0, STALL).lag, vec![(tp(7), 0)]);
    }

    #[test]
    fn an_idle_partition_is_never_stalled() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(1), t0);
        progress.committed("in", 1, 7, t0);
        progress.end_offsets("in", 1, end(7, 7, 0));
        assert_eq!(progress.report(t0 + Duration::from_secs(3600), STALL).unready, None);
    }

    #[test]
    fn retries_and_consumer_errors_make_it_unready_with_the_reason() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.retrying("in/0@5".into(), "redis: connection refused".into(), t0);
        progress.retrying("in/0@5".into(), "redis: connection refused (again)".into(), t0 + Duration::from_secs(1));
        let reason = progress.report(t0 + Duration::from_secs(4), STALL).unready.unwrap();
        assert_eq!(reason, "retrying in/0@5 for 4 s: redis: connection refused (again)");
        progress.retried();
        progress.kafka_error(Some("all brokers down".into()));
        assert_eq!(progress.report(t0, STALL).unready.as_deref(), Some("kafka: all brokers down"));
        progress.kafka_error(None);
        assert_eq!(progress.report(t0, STALL).unready, None);
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.assigned(tp(2), t0);
        progress.committed("in", 2, 1, t0);
        progress.end_offsets("in", 2, end(50, 50, 0));
        progress.revoked(&tp(2));
        assert!(!progress.is_assigned(&tp(2)));
        assert_eq!(progress.report(t0 + STALL * 2, STALL), Report { lag: vec![], stalled: vec![], unready: None });
    }
}
