//! Train/test splits and cross-validation folds **by unit**: every row of a unit (a machine, an
//! engine) lands on the same side, so a model is never scored on a unit it has seen.
//!
//! Deterministic: units are sorted before a seeded shuffle, so the same units and seed give
//! the same split whatever the row order; the seed is recorded with the model.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::rng::SplitMix64;

/// A split of row indices into a training side and a test side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Indices of the rows used for training, ascending.
    pub train: Vec<usize>,
    /// Indices of the held-out rows, ascending.
    pub test: Vec<usize>,
    /// Units on each side.
    pub train_units: usize,
    pub test_units: usize,
    pub seed: u64,
}

/// Holds out about `test_fraction` of the units (at least one, and at least one left to train
/// on). `units[i]` is the unit of row `i`.
pub fn split_by_unit<U: Ord + Clone>(units: &[U], test_fraction: f64, seed: u64) -> Result<Split, ModelError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(ModelError::InvalidParameter {
            name: "test_fraction",
            detail: format!("must be in (0, 1), got {test_fraction}"),
        });
    }
    let mut distinct: Vec<&U> = units.iter().collect::<BTreeSet<_>>().into_iter().collect();
    if distinct.len() < 2 {
        return Err(ModelError::NotEnoughData(format!("{} unit(s); a split needs at least 2", distinct.len())));
    }
    SplitMix64::new(seed).shuffle(&mut distinct);
    let n_test = ((distinct.len() as f64 * test_fraction).round() as usize).clamp(1, distinct.len() - 1);
    let test_units: BTreeSet<&U> = distinct[..n_test].iter().copied().collect();
    let (test, train): (Vec<usize>, Vec<usize>) = (0..units.len()).partition(|&i| test_units.contains(&units[i]));
    Ok(Split { train, test, train_units: distinct.len() - n_test, test_units: n_test, seed })
}

/// Assigns each unit to one of `k` folds of (nearly) equal unit counts; returns the fold of
/// each row. Used for out-of-fold predictions on the training side (threshold, intervals)
/// and for k-fold cross-validation.
pub fn folds_by_unit<U: Ord + Clone>(units: &[U], k: usize, seed: u64) -> Result<Vec<usize>, ModelError> {
    let mut distinct: Vec<&U> = units.iter().collect::<BTreeSet<_>>().into_iter().collect();
    if k < 2 || distinct.len() < k {
        return Err(ModelError::NotEnoughData(format!("{} unit(s) cannot fill {k} folds (k ≥ 2)", distinct.len())));
    }
    SplitMix64::new(seed).shuffle(&mut distinct);
    let fold_of: BTreeMap<&U, usize> = distinct.into_iter().enumerate().map(|(i, unit)| (unit, i % k)).collect();
    Ok(units.iter().map(|unit| fold_of[unit]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 50 units with 1 to 9 rows each, interleaved.
    fn units() -> Vec<u32> {
        let mut units = Vec::new();
        for round in 0..9u32 {
            for unit in 0..50u32 {
                if unit % 9 >= round {
                    units.push(unit);
                }
            }
        }
        units
    }

    #[test]
    fn no_unit_is_on_both_sides() {
        let units = units();
        for seed in 0..20 {
            let split = split_by_unit(&units, 0.2, seed).unwrap();
            let train: BTreeSet<u32> = split.train.iter().map(|&i| units[i]).collect();
            let test: BTreeSet<u32> = split.test.iter().map(|&i| units[i]).collect();
            assert!(train.is_disjoint(&test), "seed {seed}");
            assert_eq!(train.len() + test.len(), 50);
            assert_eq!((split.train_units, split.test_units), (40, 10));
            assert_eq!(split.train.len() + split.test.len(), units.len());
        }
    }

    #[test]
    fn same_seed_same_split_whatever_the_row_order() {
        let units = units();
        let a = split_by_unit(&units, 0.25, 7).unwrap();
        let b = split_by_unit(&units, 0.25, 7).unwrap();
        assert_eq!(a, b);
        let reversed: Vec<u32> = units.iter().rev().copied().collect();
        let c = split_by_unit(&reversed, 0.25, 7).unwrap();
        let test_a: BTreeSet<u32> = a.test.iter().map(|&i| units[i]).collect();
        let test_c: BTreeSet<u32> = c.test.iter().map(|&i| reversed[i]).collect();
        assert_eq!(test_a, test_c);
        let other = split_by_unit(&units, 0.25, 8).unwrap();
        assert_ne!(a.test, other.test);
    }

    #[test]
    fn keeps_one_unit_on_each_side_and_refuses_bad_fractions() {
        let split = split_by_unit(&["a", "b"], 0.01, 1).unwrap();
        assert_eq!((split.train_units, split.test_units), (1, 1));
        let split = split_by_unit(&["a", "b", "c"], 0.99, 1).unwrap();
        assert_eq!((split.train_units, split.test_units), (1, 2));
        assert!(split_by_unit(&["a", "a"], 0.5, 1).is_err());
        assert!(split_by_unit(&["a", "b"], 1.0, 1).is_err());
        assert!(split_by_unit(&["a", "b"], f64::NAN, 1).is_err());
    }

    #[test]
    fn folds_keep_units_whole_and_balanced() {
        let units = units();
        let folds = folds_by_unit(&units, 5, 3).unwrap();
        let mut fold_of_unit: BTreeMap<u32, usize> = BTreeMap::new();
        for (unit, fold) in units.iter().zip(&folds) {
            assert_eq!(*fold_of_unit.entry(*unit).or_insert(*fold), *fold, "unit {unit} split across folds");
        }
        let mut per_fold = [0; 5];
        fold_of_unit.values().for_each(|&f| per_fold[f] += 1);
        assert_eq!(per_fold, [10; 5]);
        assert!(folds_by_unit(&units, 1, 3).is_err());
        assert!(folds_by_unit(&[1, 2], 3, 3).is_err());
    }
}
