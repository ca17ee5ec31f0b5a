//! The maintenance catalog and the commands a live prediction implies.

use sm_domain::{FailurePredicted, Timestamp};
use sm_workorders::catalog::{CatalogError, MaintenanceCatalog};
use sm_workorders::proposals::{LivePrediction, commands_for};
use sm_workorders::{ApprovalPolicy, Command, WorkOrder, decide};

const CATALOG: &str = include_str!("../../../deploy/catalog/maintenance.toml");
const HOUR: f64 = 3600.0;
const NOW: Timestamp = Timestamp(1_700_000_000_000_000);
const AGENT: &str = "agent:scheduling";

fn rul(hours: f64, low: f64, high: f64) -> FailurePredicted {
    FailurePredicted {
        model_name: "rul-pump".into(),
        model_version: 2,
        model_kind: "remaining_useful_life".into(),
        asset_type: "pump".into(),
        rul_seconds: hours * HOUR,
        rul_low_seconds: low * HOUR,
        rul_high_seconds: high * HOUR,
        coverage: 0.9,
        horizon_seconds: 0.0,
        failure_probability: 0.0,
        cycles: 50,
        contributions: vec![],
    }
}

fn live<'a>(event_id: &'a str, asset: &'a str, prediction: &'a FailurePredicted) -> LivePrediction<'a> {
    LivePrediction { event_id, asset_id: asset, site: "plant-a", at: NOW, prediction }
}

#[test]
fn the_demo_catalog_parses_and_bad_entries_are_named() {
    let catalog = MaintenanceCatalog::parse(CATALOG).unwrap();
    assert_eq!(catalog.criticality("pump-001", "pump"), 5);
    assert_eq!(catalog.criticality("pump-002", "pump"), 3);
    assert!(catalog.asset_type("compressor").unwrap().approval.policy().four_eyes);
    let broken = CATALOG.replace("estimated_minutes = 240", "estimated_minutes = 0");
    let error = MaintenanceCatalog::parse(&broken).unwrap_err();
    assert!(matches!(&error, CatalogError::FailureMode { code, .. } if code == "BRG-WEAR"), "{error}");
    let unknown = CATALOG.replace("remedy = \"replace the valve", "remedi = \"replace the valve");
    assert!(matches!(MaintenanceCatalog::parse(&unknown), Err(CatalogError::Syntax(_))));
    let no_threshold = CATALOG.replace("opens_when = { failure_probability_above = 0.6 }", "opens_when = {}");
    assert!(MaintenanceCatalog::parse(&no_threshold).unwrap_err().to_string().contains("opens_when"));
}

#[test]
fn a_wearing_pump_opens_one_order_and_later_predictions_update_it() {
    let catalog = MaintenanceCatalog::parse(CATALOG).unwrap();
    let policy = catalog.asset_type("pump").unwrap().approval.policy();
    // Healthy: RUL far above a week.
    let healthy = rul(900.0, 700.0, 1100.0);
    assert!(commands_for(&catalog, live("e0", "pump-002", &healthy), |_| None, AGENT).is_empty());

    // Wearing: pessimistic RUL 80 h < 168 h. Deadline 80 − 12 = 68 h away.
    let wearing = rul(100.0, 80.0, 120.0);
    let commands = commands_for(&catalog, live("e1", "pump-002", &wearing), |_| None, AGENT);
    let [Command::Propose(proposal)] = &commands[..] else { panic!("{commands:?}") };
    assert_eq!(proposal.work_order_id, "wo-e1-BRG-WEAR");
    assert_eq!(proposal.deadline, Timestamp(NOW.0 + 68 * 3_600_000_000));
    assert_eq!(proposal.required_skills.len(), 2);
    assert!((proposal.confidence - 0.8).abs() < 1e-9, "1 - 20/100: {}", proposal.confidence);
    assert_eq!(proposal.priority, 7 * 3, "urgency round(480/68) = 7, criticality 3");
    assert_eq!(proposal.evidence.prediction_event_ids, ["e1"]);
    let events = decide(None, &commands[0], &policy, NOW).unwrap();
    assert_eq!(events.len(), 2, "confidence 0.8 and 68 h: auto-approved");
    let order = WorkOrder::replay(&events).unwrap();

    // The next cycle says about the same: no update (no flood).
    let same = rul(99.0, 79.6, 119.0);
    assert!(commands_for(&catalog, live("e2", "pump-002", &same), |_| Some(&order), AGENT).is_empty());
    // Much worse: the deadline moves, the order is updated, not a second one opened.
    let worse = rul(40.0, 30.0, 50.0);
    let commands = commands_for(&catalog, live("e3", "pump-002", &worse), |_| Some(&order), AGENT);
    let [Command::Update { deadline, priority, .. }] = &commands[..] else { panic!("{commands:?}") };
    assert_eq!(*deadline, Timestamp(NOW.0 + 18 * 3_600_000_000));
    assert_eq!(*priority, 20 * 3);
    let updated = decide(Some(&order), &commands[0], &policy, NOW).unwrap();
    let order = WorkOrder::replay(events.iter().chain(&updated)).unwrap();
    assert_eq!(order.evidence.prediction_event_ids, ["e1", "e3"]);
    // The same prediction again (a replay after a crash): the same command, applied once.
    let again = commands_for(&catalog, live("e3", "pump-002", &worse), |_| None, AGENT);
    let Command::Propose(p) = &again[0] else { panic!() };
    assert_eq!(p.work_order_id, "wo-e3-BRG-WEAR", "ids come from the prediction, not a clock");
}

#[test]
fn an_unsure_or_critical_asset_goes_to_a_planner_and_four_eyes_types_never_auto_approve() {
    let catalog = MaintenanceCatalog::parse(CATALOG).unwrap();
    let policy = catalog.asset_type("pump").unwrap().approval.policy();
    // A wide interval: confidence 1 − 60/100 = 0.4.
    let unsure = rul(100.0, 70.0, 190.0);
    let commands = commands_for(&catalog, live("e1", "pump-001", &unsure), |_| None, AGENT);
    let Command::Propose(proposal) = &commands[0] else { panic!() };
    assert_eq!(proposal.priority % 5, 0, "pump-001 has criticality 5");
    assert_eq!(decide(None, &commands[0], &policy, NOW).unwrap().len(), 1, "waits for a planner");

    let mut failing = rul(0.0, 0.0, 0.0);
    failing.asset_type = "compressor".into();
    failing.model_kind = "failure_classifier".into();
    failing.failure_probability = 0.95;
    failing.horizon_seconds = 72.0 * HOUR;
    let commands = commands_for(&catalog, live("e9", "comp-003", &failing), |_| None, AGENT);
    let Command::Propose(proposal) = &commands[0] else { panic!("{commands:?}") };
    assert_eq!(proposal.deadline, Timestamp(NOW.0 + 48 * 3_600_000_000), "horizon 72 h − 24 h margin");
    assert!((proposal.confidence - 0.95).abs() < 1e-9);
    let four_eyes = catalog.asset_type("compressor").unwrap().approval.policy();
    assert_eq!(four_eyes, ApprovalPolicy::four_eyes());
    assert_eq!(decide(None, &commands[0], &four_eyes, NOW).unwrap().len(), 1, "never automatic");
    // An asset type the catalog does not know opens nothing.
    let mut unknown = rul(10.0, 5.0, 15.0);
    unknown.asset_type = "turbine".into();
    assert!(commands_for(&catalog, live("e5", "t-1", &unknown), |_| None, AGENT).is_empty());
}
