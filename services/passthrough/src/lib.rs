//! Pass-through agent: forwards every reading from one topic to another on the exactly-once
//! runtime, unchanged except for a new envelope caused by the input. It is the runtime's
//! reference agent: the exactly-once tests, the dead-letter tests and the throughput
//! benchmark run it, and `make demo` shows it until the readings path lands.

use serde::{Deserialize, Serialize};
use sm_domain::{Envelope, SensorReading, topics};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Source};
use sm_telemetry::TelemetryConfig;

/// Settings of the pass-through agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassthroughConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub passthrough: PassthroughSettings,
}

/// Topics of the pass-through agent (`SM_PASSTHROUGH__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassthroughSettings {
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
}

impl Default for PassthroughSettings {
    fn default() -> Self {
        Self {
            input_topic: topics::READINGS_RAW.to_owned(),
            output_topic: topics::READINGS_PASSTHROUGH.to_owned(),
            dead_letter_topic: topics::READINGS_REJECTED.to_owned(),
        }
    }
}

impl PassthroughConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Forwards each reading to `output_topic`.
pub struct Passthrough {
    output_topic: &'static str,
}

impl Passthrough {
    /// `output_topic` lives as long as the process (it comes from configuration).
    pub fn new(output_topic: &str) -> Self {
        Self { output_topic: Box::leak(output_topic.to_owned().into_boxed_str()) }
    }
}

impl Handler for Passthrough {
    type Input = SensorReading;

    async fn handle(&mut self, input: &Envelope<SensorReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        Ok(Outputs::one(self.output_topic, input.payload.clone()))
    }
}
