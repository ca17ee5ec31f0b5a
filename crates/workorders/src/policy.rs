//! The approval gate of a proposed work order (per asset type or criticality, from the
//! maintenance catalog).

use sm_domain::Timestamp;

/// When a proposal is approved without a person, and whether a person may approve their own.
///
/// Auto-approval needs both a confident prediction and time: an order whose deadline is
/// close disrupts the plan (and often production), and an unsure one may be a false alarm, so
/// both go to a planner. The defaults (confidence 0.8, 24 h to the deadline) are starting
/// points a plant tunes per asset type; nothing here was fitted to data.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    /// None: every order waits for a planner.
    pub auto_approve: Option<AutoApprove>,
    /// The approver is not the proposer, and nothing is approved automatically (the agent
    /// proposed it).
    pub four_eyes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoApprove {
    /// The prediction's confidence at least this, in [0, 1].
    pub min_confidence: f64,
    /// At least this long from now to the deadline.
    pub min_hours_to_deadline: f64,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self { auto_approve: Some(AutoApprove { min_confidence: 0.8, min_hours_to_deadline: 24.0 }), four_eyes: false }
    }
}

impl ApprovalPolicy {
    /// Every order waits for a planner, who may not be its proposer.
    pub fn four_eyes() -> Self {
        Self { auto_approve: None, four_eyes: true }
    }

    /// The reason to record when a proposal of `confidence` due at `deadline` is approved
    /// at `now` without a person; None when a planner decides.
    pub fn auto_approval(&self, confidence: f64, deadline: Timestamp, now: Timestamp) -> Option<String> {
        if self.four_eyes {
            return None;
        }
        let rule = self.auto_approve?;
        let hours = (deadline.0 - now.0) as f64 / 3_600_000_000.0;
        (confidence >= rule.min_confidence && hours >= rule.min_hours_to_deadline).then(|| {
            format!(
                "auto-approved by policy: confidence {confidence:.2} >= {:.2} and {hours:.1} h to the deadline >= {:.1} h",
                rule.min_confidence, rule.min_hours_to_deadline
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn auto_approves_only_confident_orders_with_time_left() {
        let policy = ApprovalPolicy::default();
        let now = Timestamp(0);
        assert!(policy.auto_approval(0.9, Timestamp(48 * HOUR), now).is_some());
        assert!(policy.auto_approval(0.8, Timestamp(24 * HOUR), now).is_some(), "thresholds are inclusive");
        assert!(policy.auto_approval(0.79, Timestamp(48 * HOUR), now).is_none(), "unsure: a planner decides");
        assert!(policy.auto_approval(0.99, Timestamp(23 * HOUR), now).is_none(), "urgent: a planner decides");
        assert!(ApprovalPolicy::four_eyes().auto_approval(1.0, Timestamp(1000 * HOUR), now).is_none());
        let manual = ApprovalPolicy { auto_approve: None, four_eyes: false };
        assert!(manual.auto_approval(1.0, Timestamp(1000 * HOUR), now).is_none());
    }
}
