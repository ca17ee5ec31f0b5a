//! The platform's analytics, free of I/O so that the agents, the query service's on-demand
//! APIs, the benchmarks and `smctl eval` all run exactly the same code.
//!
//! - [`sensor`]: per-sensor streaming detectors (robust z-score on a rolling median/MAD,
//!   EWMA) with persistence (k of n) and alarm hysteresis;
//! - [`multivariate`]: per-asset detection over the asset's sensors aligned in time buckets
//!   (k-means distance and PCA T²/Q), with the sensors that drove the score;
//! - [`drift`]: two-sample Kolmogorov–Smirnov, PSI, Page–Hinkley, and the per-sensor drift
//!   monitor with event-time windows and hysteresis;
//! - [`nab`]: the Numenta Anomaly Benchmark's scoring.

pub mod drift;
pub mod multivariate;
pub mod nab;
pub mod sensor;
