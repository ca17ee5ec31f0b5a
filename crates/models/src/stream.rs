//! Live readings into model cycles: one asset's readings, by sensor type and event time,
//! averaged over tumbling event-time windows of the model's cycle length.
//!
//! Pure and serialisable, so the prediction agent checkpoints it with its other state and
//! the trainer builds its training cycles with the same code the agent serves with.

use serde::{Deserialize, Serialize};

use crate::cmapss::{Cycle, SENSORS, SETTINGS};
use crate::rul::StreamLayout;

/// What one reading did to the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Added to the open cycle.
    Added,
    /// Closed the open cycle (now in [`CycleBuilder::history`]) and opened the reading's own.
    Closed,
    /// Not a channel of the layout: the model does not read this sensor type.
    UnknownChannel,
    /// Older than the open cycle: its cycle is already closed.
    Late,
}

/// One asset's cycles so far (the newest `keep`) and the cycle being filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleBuilder {
    channels: Vec<String>,
    cycle_ms: i64,
    keep: usize,
    /// Start of the first cycle ever opened: cycle numbers count from it.
    origin_ms: Option<i64>,
    /// Start of the open cycle.
    open_ms: Option<i64>,
    sums: Vec<f64>,
    counts: Vec<u32>,
    /// Each channel's latest cycle value: what an empty slot repeats.
    last: Vec<Option<f64>>,
    history: Vec<Cycle>,
}

impl CycleBuilder {
    /// A builder keeping the newest `keep` closed cycles (at least 1).
    pub fn new(layout: &StreamLayout, keep: usize) -> Self {
        let n = layout.channels.len().min(SENSORS);
        Self {
            channels: layout.channels[..n].to_vec(),
            cycle_ms: layout.cycle_ms.max(1),
            keep: keep.max(1),
            origin_ms: None,
            open_ms: None,
            sums: vec![0.0; n],
            counts: vec![0; n],
            last: vec![None; n],
            history: Vec::new(),
        }
    }

    /// Whether this builder was made for `layout` (a new model version may read other
    /// channels or cycles, and then the asset starts afresh).
    pub fn fits(&self, layout: &StreamLayout) -> bool {
        self.channels == layout.channels && self.cycle_ms == layout.cycle_ms
    }

    /// Keeps at least `keep` closed cycles from now on (a new model version may look further
    /// back; the history already held is kept, so nothing restarts).
    pub fn keep_at_least(&mut self, keep: usize) {
        self.keep = self.keep.max(keep);
    }

    /// Adds one reading of sensor type `channel` at event time `event_ms`.
    pub fn push(&mut self, channel: &str, event_ms: i64, value: f64) -> Pushed {
        let Some(slot) = self.channels.iter().position(|c| c == channel) else {
            return Pushed::UnknownChannel;
        };
        let start = event_ms.div_euclid(self.cycle_ms) * self.cycle_ms;
        let mut outcome = Pushed::Added;
        match self.open_ms {
            None => {
                self.origin_ms = Some(start);
                self.open_ms = Some(start);
            }
            Some(open) if start < open => return Pushed::Late,
            Some(open) if start > open => {
                if self.close(open) {
                    outcome = Pushed::Closed;
                }
                self.open_ms = Some(start);
            }
            Some(_) => {}
        }
        if value.is_finite() {
            self.sums[slot] += value;
            self.counts[slot] += 1;
        }
        outcome
    }

    /// Closes the cycle that started at `open`; false when a channel has never had a value
    /// (an incomplete cycle is not a cycle the model can read).
    fn close(&mut self, open: i64) -> bool {
        for slot in 0..self.channels.len() {
            if self.counts[slot] > 0 {
                self.last[slot] = Some(self.sums[slot] / f64::from(self.counts[slot]));
            }
            self.sums[slot] = 0.0;
            self.counts[slot] = 0;
        }
        if self.last.iter().any(Option::is_none) {
            return false;
        }
        let mut sensors = [0.0; SENSORS];
        for (slot, value) in self.last.iter().enumerate() {
            sensors[slot] = value.unwrap_or_default();
        }
        let number = (open - self.origin_ms.unwrap_or(open)) / self.cycle_ms + 1;
        let cycle = u32::try_from(number).unwrap_or(u32::MAX);
        self.history.push(Cycle { unit: 0, cycle, settings: [0.0; SETTINGS], sensors });
        if self.history.len() >= 2 * self.keep {
            self.history.drain(..self.history.len() - self.keep);
        }
        true
    }

    /// Closed cycles, oldest first (at least the newest `keep`).
    pub fn history(&self) -> &[Cycle] {
        let start = self.history.len().saturating_sub(self.keep);
        &self.history[start..]
    }

    /// Event time at which the newest closed cycle ended.
    pub fn closed_until_ms(&self) -> Option<i64> {
        let last = self.history.last()?;
        Some(self.origin_ms? + i64::from(last.cycle) * self.cycle_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> StreamLayout {
        StreamLayout { channels: vec!["temperature".into(), "vibration_rms".into()], cycle_ms: 1_000 }
    }

    #[test]
    fn averages_each_cycle_and_repeats_a_silent_channel() {
        let mut b = CycleBuilder::new(&layout(), 10);
        assert_eq!(b.push("temperature", 10_100, 50.0), Pushed::Added);
        assert_eq!(b.push("temperature", 10_900, 52.0), Pushed::Added);
        assert_eq!(b.push("vibration_rms", 10_500, 2.0), Pushed::Added);
        assert_eq!(b.push("pressure", 10_500, 2.0), Pushed::UnknownChannel);
        assert_eq!(b.push("temperature", 11_000, 60.0), Pushed::Closed);
        assert_eq!(b.push("temperature", 10_999, 1.0), Pushed::Late);
        // Cycle 2 gets no vibration: it repeats 2.0. Cycle 3 is skipped entirely (a gap),
        // so the next one is numbered 4 and slopes see real time.
        assert_eq!(b.push("temperature", 13_200, 70.0), Pushed::Closed);
        let h = b.history();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].cycle, h[0].sensors[0], h[0].sensors[1]), (1, 51.0, 2.0));
        assert_eq!((h[1].cycle, h[1].sensors[0], h[1].sensors[1]), (2, 60.0, 2.0));
        assert_eq!(b.closed_until_ms(), Some(12_000));
        b.push("vibration_rms", 14_000, 3.0);
        assert_eq!(b.history().last().unwrap().cycle, 4);
    }

    #[test]
    fn a_cycle_without_every_channel_seen_is_not_emitted_and_history_is_bounded() {
        let mut b = CycleBuilder::new(&layout(), 3);
        b.push("temperature", 0, 1.0);
        assert_eq!(b.push("temperature", 1_000, 1.0), Pushed::Added, "vibration never seen yet");
        assert!(b.history().is_empty());
        for t in 1..20 {
            b.push("vibration_rms", t * 1_000 + 1, t as f64);
            b.push("temperature", t * 1_000 + 2, t as f64);
        }
        assert_eq!(b.history().len(), 3);
        assert!(b.history.len() < 6, "old cycles are dropped");
        assert!(b.history().windows(2).all(|w| w[1].cycle == w[0].cycle + 1));
        assert!(b.fits(&layout()));
        b.keep_at_least(5);
        for t in 20..30 {
            b.push("vibration_rms", t * 1_000 + 1, t as f64);
        }
        assert_eq!(b.history().len(), 5, "a longer window keeps more from now on");
        assert!(!b.fits(&StreamLayout { cycle_ms: 500, ..layout() }));
    }
}
