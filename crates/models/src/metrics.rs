//! Evaluation metrics: precision, recall, F1 and ROC-AUC for the failure classifier; RMSE, MAE
//! and the PHM08 score for remaining useful life.
//!
//! Plain functions over slices so that `smctl eval`, the trainer's champion/challenger
//! comparison and the tests compute every figure the same way.

use serde::{Deserialize, Serialize};

/// Counts of a binary decision against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

impl Confusion {
    /// Decides "positive" where `score >= threshold`.
    pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> Self {
        debug_assert_eq!(scores.len(), labels.len());
        let mut counts = Self::default();
        for (&score, &label) in scores.iter().zip(labels) {
            match (score >= threshold, label) {
                (true, true) => counts.true_positives += 1,
                (true, false) => counts.false_positives += 1,
                (false, false) => counts.true_negatives += 1,
                (false, true) => counts.false_negatives += 1,
            }
        }
        counts
    }

    /// Share of alarms that were failures; 0 when nothing was flagged.
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    /// Share of failures that were flagged; 0 when there were none.
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.true_positives, 2 * self.true_positives + self.false_positives + self.false_negatives)
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 { 0.0 } else { numerator as f64 / denominator as f64 }
}

/// Area under the ROC curve as the Mann–Whitney probability that a random positive scores
/// above a random negative (ties count one half). `None` when one class is absent.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    debug_assert_eq!(scores.len(), labels.len());
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks, with tied scores given their average rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0; // ranks start..end are 1-based start+1..=end
        rank_sum += average_rank * order[start..end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The threshold that maximises F1 on the given (training-side) scores: the midpoint between
/// the lowest score flagged and the next score below it, so that a slightly different score
/// on new data falls on the same side. 0.5 when there are no positives.
pub fn best_f1_threshold(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return 0.5;
    }
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut best_f1, mut best_threshold) = (-1.0, 0.5);
    let mut i = 0;
    while i < order.len() {
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            if labels[order[i]] {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        let f1 = 2.0 * tp as f64 / (tp + fp + positives) as f64;
        if f1 > best_f1 {
            best_f1 = f1;
            best_threshold = match order.get(i) {
                Some(&next) => (score + scores[next]) / 2.0,
                None => score,
            };
        }
    }
    best_threshold
}

/// Root mean squared error; NaN for empty input.
pub fn rmse(predicted: &[f64], truth: &[f64]) -> f64 {
    debug_assert_eq!(predicted.len(), truth.len());
    (predicted.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / predicted.len() as f64).sqrt()
}

/// Mean absolute error; NaN for empty input.
pub fn mae(predicted: &[f64], truth: &[f64]) -> f64 {
    debug_assert_eq!(predicted.len(), truth.len());
    predicted.iter().zip(truth).map(|(p, t)| (p - t).abs()).sum::<f64>() / predicted.len() as f64
}

/// The PHM08 challenge score, summed over predictions: with d = predicted − true,
/// e^(−d/13) − 1 for early predictions (d < 0) and e^(d/10) − 1 for late ones. Late is
/// punished harder because a machine that fails before its predicted end is the costly case.
/// Lower is better; 0 is perfect.
pub fn phm08_score(predicted: &[f64], truth: &[f64]) -> f64 {
    debug_assert_eq!(predicted.len(), truth.len());
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let d = p - t;
            if d < 0.0 { (-d / 13.0).exp() - 1.0 } else { (d / 10.0).exp() - 1.0 }
        })
        .sum()
}

/// Share of truths inside their `[lower, upper]` interval.
pub fn interval_coverage(lower: &[f64], upper: &[f64], truth: &[f64]) -> f64 {
    debug_assert!(lower.len() == truth.len() && upper.len() == truth.len());
    let inside = truth.iter().zip(lower.iter().zip(upper)).filter(|(t, (l, u))| (*l..=*u).contains(t)).count();
    ratio(inside, truth.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phm08_matches_hand_computed_values() {
        // d = -10: e^(10/13) - 1; d = 0: 0; d = +10: e - 1.
        let score = phm08_score(&[10.0, 20.0, 30.0], &[20.0, 20.0, 20.0]);
        assert!((score - 2.876_387_362_407_491).abs() < 1e-12, "{score}");
        // Late by 25 costs more than early by 5... and more than early by 25.
        assert!((phm08_score(&[45.0], &[20.0]) - 11.182_493_960_703_473).abs() < 1e-12);
        assert!((phm08_score(&[15.0], &[20.0]) - 0.469_049_193_849_016_67).abs() < 1e-12);
        assert!(phm08_score(&[45.0], &[20.0]) > phm08_score(&[0.0], &[25.0]));
        assert_eq!(phm08_score(&[7.0], &[7.0]), 0.0);
    }

    #[test]
    fn roc_auc_matches_hand_computed_cases() {
        // 4 pairs, 3 ordered correctly.
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        // A tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4.
        assert_eq!(roc_auc(&[0.5, 0.5, 0.2, 0.9], &[true, false, false, true]), Some(0.875));
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.3, 0.3, 0.3], &[true, false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn confusion_counts_and_scores() {
        let scores = [0.9, 0.8, 0.7, 0.2, 0.1];
        let labels = [true, false, true, true, false];
        let c = Confusion::at_threshold(&scores, &labels, 0.5);
        assert_eq!((c.true_positives, c.false_positives, c.true_negatives, c.false_negatives), (2, 1, 1, 1));
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.f1() - 2.0 / 3.0).abs() < 1e-12);
        let none = Confusion::at_threshold(&scores, &labels, 2.0);
        assert_eq!((none.precision(), none.recall(), none.f1()), (0.0, 0.0, 0.0));
    }

    #[test]
    fn best_threshold_separates_when_it_can() {
        let scores = [0.95, 0.9, 0.6, 0.3, 0.2, 0.1];
        let labels = [true, true, true, false, false, false];
        let t = best_f1_threshold(&scores, &labels);
        assert!((t - 0.45).abs() < 1e-12, "{t}");
        assert_eq!(Confusion::at_threshold(&scores, &labels, t).f1(), 1.0);
        // A negative above the positives: flagging all three top ones still wins (F1 0.8 vs 0.67).
        let labels = [false, true, true, false, false, false];
        let t = best_f1_threshold(&scores, &labels);
        assert!((t - 0.45).abs() < 1e-12, "{t}");
        assert_eq!(best_f1_threshold(&scores, &[false; 6]), 0.5);
    }

    #[test]
    fn regression_errors_and_coverage() {
        assert!((rmse(&[1.0, 3.0], &[2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!((rmse(&[0.0, 4.0], &[0.0, 0.0]) - 8.0f64.sqrt()).abs() < 1e-12);
        assert!((mae(&[0.0, 4.0], &[1.0, 1.0]) - 2.0).abs() < 1e-12);
        assert_eq!(interval_coverage(&[0.0, 0.0], &[1.0, 1.0], &[0.5, 2.0]), 0.5);
    }
}
