//! The scheduling agent (ARCHITECTURE §5, §6, §8): live predictions and people's commands
//! into work orders, and each site's approved orders into its technicians' shifts.
//!
//! Two handlers on the one exactly-once runtime, each its own consumer group:
//!
//! - [`Intake`] reads `sm.predictions.v1` (keyed by asset) and forwards each prediction to
//!   `sm.commands.v1` keyed by the asset's site (from the asset registry). Predictions are
//!   live by construction: the prediction agent never predicts from backfilled readings.
//! - [`SchedulingAgent`] reads `sm.commands.v1`, where a site's predictions and the commands
//!   for its orders share a partition: the instance owning that partition owns the site's
//!   work orders and its whole plan, so two instances can never book one technician twice
//!   (a technician belongs to their home site's plan). It applies the catalog (at most one
//!   open order per asset and failure mode, later predictions update it), the approval
//!   policy and people's commands through the aggregate's `decide`, and writes the orders'
//!   events, or `CommandRejected`, to `sm.workorders.v1` keyed by order id.
//! - On its tick it re-plans every owned site whose orders or roster changed, with the
//!   optimiser behind [`sm_planner::Planner`], and books the changes as the orders' events.
//!
//! Orders and site plans are checkpointed to `sm.scheduling.state.v1` in the same
//! transaction as the offsets, so a restart neither forgets an order nor books one twice.
//! The roster (`sm.technicians.v1`) is a table every instance follows.

use serde::{Deserialize, Serialize};
use sm_domain::roster::TechnicianRegistered;
use sm_domain::work_orders::{SchedulingRequest, WorkOrderCommand, WorkOrderEvent};
use sm_domain::{AssetId, AssetRegistered, DomainEvent, Envelope, FailurePredicted, TenantId, Timestamp, topics};
use sm_kafka::changelog::Table;
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Rejection, Source, StateStore};
use sm_planner::Planner;
use sm_telemetry::TelemetryConfig;
use sm_workorders::catalog::MaintenanceCatalog;
use sm_workorders::proposals::{LivePrediction, commands_for};
use sm_workorders::site_plan::{self, PlanSettings};
use sm_workorders::{ApprovalPolicy, Booking, Command, CommandMeta, Outcome, Refusal, RefusalCode, WorkOrder};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of the scheduling agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub scheduling: SchedulingSettings,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig { commit_interval_ms: 200, ..KafkaConfig::default() },
            telemetry: TelemetryConfig::default(),
            scheduling: SchedulingSettings::default(),
        }
    }
}

impl SchedulingConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        config.scheduling.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Scheduling settings (`SM_SCHEDULING__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingSettings {
    /// The maintenance catalog (TOML): failure modes, thresholds, approval policies.
    pub catalog: PathBuf,
    /// Days ahead each site is planned.
    pub horizon_days: i64,
    /// The optimiser's time limit per re-plan of one site.
    pub plan_time_limit_ms: u64,
    pub plan_seed: u64,
    /// Real microseconds per plan minute: 60 000 000 (real time) unless a demo compresses it.
    pub micros_per_minute: i64,
    /// How often sites whose orders or roster changed are re-planned.
    pub replan_interval_ms: u64,
    /// The principal the agent's own commands carry.
    pub principal: String,
    /// Where asset registrations are read from; only tests change it.
    pub assets_topic: String,
    /// Where the roster is read from; only tests change it.
    pub technicians_topic: String,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self {
            catalog: PathBuf::from("deploy/catalog/maintenance.toml"),
            horizon_days: 14,
            plan_time_limit_ms: 2_000,
            plan_seed: 7,
            micros_per_minute: 60_000_000,
            replan_interval_ms: 1_000,
            principal: "service:scheduling".into(),
            assets_topic: topics::ASSETS.into(),
            technicians_topic: topics::TECHNICIANS.into(),
        }
    }
}

impl SchedulingSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=366).contains(&self.horizon_days) {
            return Err("SM_SCHEDULING__HORIZON_DAYS must be 1 to 366".into());
        }
        if self.micros_per_minute < 1 {
            return Err("SM_SCHEDULING__MICROS_PER_MINUTE must be positive (60000000 is real time)".into());
        }
        if self.replan_interval_ms == 0 || self.plan_time_limit_ms == 0 {
            return Err("SM_SCHEDULING__REPLAN_INTERVAL_MS and __PLAN_TIME_LIMIT_MS must be positive".into());
        }
        Ok(())
    }

    /// The catalog file, read and checked.
    pub fn load_catalog(&self) -> Result<MaintenanceCatalog, String> {
        let text = std::fs::read_to_string(&self.catalog).map_err(|e| {
            format!("reading the maintenance catalog {} (SM_SCHEDULING__CATALOG): {e}", self.catalog.display())
        })?;
        MaintenanceCatalog::parse(&text).map_err(|e| format!("maintenance catalog {}: {e}", self.catalog.display()))
    }

    fn plan(&self) -> PlanSettings {
        PlanSettings {
            horizon_days: self.horizon_days,
            time_limit: Duration::from_millis(self.plan_time_limit_ms),
            seed: self.plan_seed,
            micros_per_minute: self.micros_per_minute,
        }
    }
}

/// The key of a site on `sm.commands.v1`: tenants may name sites alike.
pub fn site_key(tenant: &str, site: &str) -> String {
    format!("{tenant}/{site}")
}

/// Forwards live predictions to their site's partition of `sm.commands.v1`.
pub struct Intake {
    assets: Table<AssetRegistered>,
}

impl Intake {
    pub fn new(assets: Table<AssetRegistered>) -> Self {
        Self { assets }
    }
}

impl Handler for Intake {
    type Input = FailurePredicted;

    async fn handle(&mut self, input: &Envelope<FailurePredicted>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        let asset_id = &input.header.asset_id.0;
        let Some(asset) = self.assets.get(asset_id) else {
            return Err(Rejection::new(
                "unknown_asset",
                format!("asset {asset_id} is not registered: register it with its site (smctl assets apply)"),
            )
            .into());
        };
        if asset.payload.site.is_empty() {
            return Err(Rejection::new(
                "asset_without_site",
                format!("asset {asset_id} has no site, so no site plan owns its work: register it with one"),
            )
            .into());
        }
        let mut outputs = Outputs::none();
        outputs.push_keyed(
            topics::COMMANDS,
            site_key(&input.header.tenant_id.0, &asset.payload.site),
            input.payload.clone(),
        );
        Ok(outputs)
    }
}

/// A work order with its tenant, as checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderEntry {
    pub tenant: String,
    pub order: WorkOrder,
}

/// One site's plan, as checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteState {
    pub tenant: String,
    pub site: String,
    /// The partition of `sm.commands.v1` holding the site: its owner plans it.
    pub partition: i32,
    pub plan_version: i64,
    /// Open orders (not completed, rejected, cancelled or superseded).
    pub open: BTreeSet<String>,
    /// Orders changed since the last plan.
    pub dirty: bool,
}

/// The agent's counters (`sm_scheduling_*`).
#[derive(Clone)]
struct Metrics {
    events: prometheus::IntCounterVec,
    refused: prometheus::IntCounterVec,
    replans: prometheus::IntCounterVec,
    unplanned: prometheus::IntGaugeVec,
    late: prometheus::IntGaugeVec,
}

impl Metrics {
    fn new() -> Self {
        let events = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_scheduling_work_order_events_total", "Work-order events written, by type"),
            &["event_type"],
        )
        .expect("valid metric");
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_scheduling_commands_refused_total", "Commands answered with CommandRejected"),
            &["command", "code"],
        )
        .expect("valid metric");
        let replans = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_scheduling_replans_total", "Site re-plans, by the planner whose plan was used"),
            &["planner"],
        )
        .expect("valid metric");
        let unplanned = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("sm_scheduling_unplanned_orders", "Approved orders no technician has room for"),
            &["site"],
        )
        .expect("valid metric");
        let late = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("sm_scheduling_late_orders", "Orders planned to end after their deadline"),
            &["site"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(events.clone()));
        let _ = prometheus::register(Box::new(refused.clone()));
        let _ = prometheus::register(Box::new(replans.clone()));
        let _ = prometheus::register(Box::new(unplanned.clone()));
        let _ = prometheus::register(Box::new(late.clone()));
        Self { events, refused, replans, unplanned, late }
    }
}

/// The work-order owner and site planner.
pub struct SchedulingAgent {
    settings: SchedulingSettings,
    catalog: MaintenanceCatalog,
    roster: Table<TechnicianRegistered>,
    roster_version: u64,
    orders: StateStore<OrderEntry>,
    sites: StateStore<SiteState>,
    /// Partitions of `sm.commands.v1` this instance owns.
    owned: BTreeSet<i32>,
    /// Re-plan every owned site at the next tick (after a restore or a rebalance).
    replan_all: bool,
    solver: Box<dyn Planner + Send>,
    metrics: Metrics,
}

const ORDER_PREFIX: &str = "order/";
const SITE_PREFIX: &str = "site/";

impl SchedulingAgent {
    pub fn new(settings: SchedulingSettings, catalog: MaintenanceCatalog, roster: Table<TechnicianRegistered>) -> Self {
        Self {
            settings,
            catalog,
            roster,
            roster_version: u64::MAX,
            orders: StateStore::new(),
            sites: StateStore::new(),
            owned: BTreeSet::new(),
            replan_all: true,
            solver: Box::new(sm_planner::Lns::default()),
            metrics: Metrics::new(),
        }
    }

    /// A work order and its tenant, if this instance holds it.
    pub fn order(&self, id: &str) -> Option<&OrderEntry> {
        self.orders.get(id)
    }

    fn policy(&self, asset_type: &str) -> ApprovalPolicy {
        self.catalog.asset_type(asset_type).map(|t| t.approval.policy()).unwrap_or_default()
    }

    /// Makes sure site `key` exists and knows its partition; touches the store (and so the
    /// next checkpoint) only when something changed.
    fn ensure_site(&mut self, key: &str, tenant: &str, site: &str, partition: i32) {
        if self.sites.get(key).is_some_and(|s| s.partition == partition) {
            return;
        }
        let state = self.sites.get_mut_or_insert_with(key, || SiteState {
            tenant: tenant.to_owned(),
            site: site.to_owned(),
            partition,
            plan_version: 0,
            open: BTreeSet::new(),
            dirty: false,
        });
        state.partition = partition;
    }

    /// Applies `command` to order `id` (of `tenant` at site `key`): its events or its refusal
    /// become outputs, the state follows the events.
    /// `tick`: the events come from the clock, not from an input (their own causal chain).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        key: &str,
        tenant: &str,
        id: &str,
        command: &Command,
        now: Timestamp,
        tick: bool,
        outputs: &mut Outputs,
    ) {
        let origin = tick.then(|| (TenantId(tenant.to_owned()), now));
        let current = self.orders.get(id).filter(|e| e.tenant == tenant).map(|e| &e.order);
        let asset_type = match (current, command) {
            (Some(order), _) => order.asset_type.clone(),
            (None, Command::Propose(p)) => p.asset_type.clone(),
            (None, _) => String::new(),
        };
        let policy = self.policy(&asset_type);
        match sm_workorders::decide(current, command, &policy, now) {
            Ok(events) => {
                if events.is_empty() {
                    return;
                }
                let mut order = current.cloned();
                for event in &events {
                    order = WorkOrder::apply(order, event);
                    self.metrics.events.with_label_values(&[event.event_type()]).inc();
                    push_event(outputs, event, &origin);
                }
                let Some(order) = order else { return };
                let site = self.sites.get_mut(key).expect("the site exists before its orders");
                if order.status.is_open() {
                    site.open.insert(order.id.clone());
                } else {
                    site.open.remove(&order.id);
                }
                // Anything but a booking changes what the plan must hold.
                if events.iter().any(|e| !matches!(e, WorkOrderEvent::Scheduled(_) | WorkOrderEvent::Rescheduled(_))) {
                    site.dirty = true;
                }
                let entry = OrderEntry { tenant: tenant.to_owned(), order };
                let slot = self.orders.get_mut_or_insert_with(id, || entry.clone());
                *slot = entry;
            }
            Err(refusal) => {
                self.metrics.refused.with_label_values(&[command.name(), refusal.code.as_str()]).inc();
                emit(outputs, &origin, id, refusal.rejected(id, command));
            }
        }
    }

    fn on_prediction(
        &mut self,
        input: &Envelope<SchedulingRequest>,
        prediction: &FailurePredicted,
        key: &str,
        site: &str,
        partition: i32,
    ) -> Outputs {
        let tenant = input.header.tenant_id.0.clone();
        self.ensure_site(key, &tenant, site, partition);
        let asset = input.header.asset_id.0.clone();
        // The intake's event is caused by the prediction: the evidence names the prediction.
        let prediction_id = input.header.causation_id.unwrap_or(input.header.event_id).to_string();
        let open: BTreeMap<String, WorkOrder> = self
            .sites
            .get(key)
            .into_iter()
            .flat_map(|s| s.open.iter())
            .filter_map(|id| self.orders.get(id))
            .filter(|e| e.order.asset_id == asset)
            .map(|e| (e.order.failure_mode.clone(), e.order.clone()))
            .collect();
        let live = LivePrediction {
            event_id: &prediction_id,
            asset_id: &asset,
            site,
            at: input.header.occurred_at,
            prediction,
        };
        let commands = commands_for(&self.catalog, live, |mode| open.get(mode), &self.settings.principal);
        let mut outputs = Outputs::none();
        for command in commands {
            let Some(id) = command.target().map(str::to_owned) else { continue };
            self.execute(key, &tenant, &id, &command, input.header.occurred_at, false, &mut outputs);
        }
        outputs
    }

    fn on_command(
        &mut self,
        input: &Envelope<SchedulingRequest>,
        command: &WorkOrderCommand,
        key: &str,
        partition: i32,
    ) -> Outputs {
        let tenant = input.header.tenant_id.0.clone();
        self.ensure_site(key, &tenant, &command.site, partition);
        let mut outputs = Outputs::none();
        let id = command.work_order_id.clone();
        let now = input.header.occurred_at;
        match self.command(&tenant, command) {
            Ok(command) => self.execute(key, &tenant, &id, &command, now, false, &mut outputs),
            Err((name, refusal)) => {
                self.metrics.refused.with_label_values(&[name, refusal.code.as_str()]).inc();
                outputs.push_for_asset(
                    topics::WORKORDERS,
                    AssetId(id.clone()),
                    sm_domain::work_orders::CommandRejected {
                        command_id: command.request_id.clone(),
                        aggregate_id: id,
                        command: command.command.clone(),
                        principal: command.principal.clone(),
                        code: refusal.code.as_str().to_owned(),
                        reason: refusal.reason,
                    },
                );
            }
        }
        outputs
    }

    /// The aggregate's command for a person's `WorkOrderCommand`, or why there is none.
    fn command(&self, tenant: &str, c: &WorkOrderCommand) -> Result<Command, (&'static str, Refusal)> {
        let meta =
            CommandMeta { principal: c.principal.clone(), request_id: c.request_id.clone(), reason: c.reason.clone() };
        let invalid =
            |name: &'static str, reason: String| (name, Refusal { code: RefusalCode::InvalidArgument, reason });
        Ok(match c.command.as_str() {
            "Approve" => Command::Approve { meta },
            "Reject" => Command::Reject { meta },
            "Defer" => Command::Defer { until: c.until, meta },
            "Start" => Command::Start { meta },
            "Cancel" => Command::Cancel { meta },
            "Complete" => {
                let Some(outcome) = &c.outcome else {
                    return Err(invalid(
                        "Complete",
                        "Complete needs the outcome (minutes, failure code, confirmed)".into(),
                    ));
                };
                Command::Complete {
                    outcome: Outcome {
                        actual_minutes: outcome.actual_minutes,
                        notes: outcome.notes.clone(),
                        failure_code: outcome.failure_code.clone(),
                        failure_confirmed: outcome.failure_confirmed,
                        parts_used: outcome.parts_used.clone(),
                    },
                    meta,
                }
            }
            "Reassign" => {
                let Some(entry) = self.orders.get(&c.work_order_id).filter(|e| e.tenant == tenant) else {
                    return Err((
                        "Reassign",
                        Refusal {
                            code: RefusalCode::NotFound,
                            reason: "no such work order: list them with WorkOrderService.List".into(),
                        },
                    ));
                };
                let order = &entry.order;
                let Some(technician) =
                    self.roster.get(&c.technician_id).filter(|t| t.header.tenant_id.0 == tenant && t.payload.active)
                else {
                    return Err(invalid("Reassign", format!("technician {} is not on the roster", c.technician_id)));
                };
                let required: Vec<(String, i32)> =
                    order.required_skills.iter().map(|s| (s.skill.clone(), s.min_level)).collect();
                let has = |skill: &str, level: i32| {
                    technician.payload.skills.iter().any(|s| s.skill == skill && s.level >= level)
                };
                if let Some((skill, level)) = required.iter().find(|(s, l)| !has(s, *l)) {
                    return Err((
                        "Reassign",
                        Refusal {
                            code: RefusalCode::FailedPrecondition,
                            reason: format!(
                                "technician {} lacks {skill} at level {level}, which work order {} needs",
                                c.technician_id, order.id
                            ),
                        },
                    ));
                }
                let end = Timestamp(c.start.0 + order.estimated_minutes as i64 * self.settings.micros_per_minute);
                let version = self.sites.get(&site_key(tenant, &order.site)).map_or(0, |s| s.plan_version);
                Command::Schedule {
                    booking: Booking {
                        technician_id: c.technician_id.clone(),
                        start: c.start,
                        end,
                        plan_version: version,
                        late: end > order.deadline,
                        fixed: true,
                    },
                    meta,
                }
            }
            other => {
                return Err(invalid(
                    "Unknown",
                    format!("unknown command {other:?}: Approve, Reject, Defer, Start, Complete, Cancel or Reassign"),
                ));
            }
        })
    }

    /// Re-plans every owned site that changed (or all, when the roster did) at `now`.
    pub fn replan(&mut self, now: Timestamp) -> Outputs {
        let roster_version = self.roster.version();
        let everything = roster_version != self.roster_version || self.replan_all;
        self.roster_version = roster_version;
        self.replan_all = false;
        let due: Vec<String> = self
            .sites
            .iter()
            .filter(|(_, s)| self.owned.contains(&s.partition) && (s.dirty || everything))
            .map(|(k, _)| k.clone())
            .collect();
        let mut outputs = Outputs::none();
        let settings = self.settings.plan();
        for key in due {
            let Some(site) = self.sites.get(&key).cloned() else { continue };
            let orders: Vec<WorkOrder> =
                site.open.iter().filter_map(|id| self.orders.get(id)).map(|e| e.order.clone()).collect();
            let technicians: Vec<TechnicianRegistered> = self
                .roster
                .select(|t| t.header.tenant_id.0 == site.tenant && t.payload.site == site.site)
                .into_iter()
                .map(|t| t.payload)
                .collect();
            let version = site.plan_version + 1;
            let refs: Vec<&WorkOrder> = orders.iter().collect();
            let plan = site_plan::replan(&refs, &technicians, now, version, &settings, self.solver.as_ref());
            self.metrics.replans.with_label_values(&[plan.planner]).inc();
            self.metrics.unplanned.with_label_values(&[&key]).set(plan.unplanned.len() as i64);
            self.metrics.late.with_label_values(&[&key]).set(plan.late.len() as i64);
            if plan.violations > 0 {
                tracing::error!(site = %key, violations = plan.violations, used = plan.planner, "the solver's plan broke hard constraints");
            }
            if !plan.unplanned.is_empty() {
                tracing::warn!(site = %key, orders = ?plan.unplanned, "approved work no qualified technician has room for in the horizon");
            }
            let booked = !plan.bookings.is_empty();
            for (id, booking) in plan.bookings {
                let meta = CommandMeta {
                    principal: self.settings.principal.clone(),
                    request_id: format!("plan-{key}-{version}-{id}"),
                    reason: if booking.late {
                        format!("plan {version}: the earliest a qualified technician has, after the deadline")
                    } else {
                        format!("plan {version}")
                    },
                };
                let command = Command::Schedule { booking, meta };
                self.execute(&key, &site.tenant, &id, &command, now, true, &mut outputs);
            }
            if let Some(site) = self.sites.get_mut(&key) {
                site.dirty = false;
                if booked {
                    site.plan_version = version;
                }
            }
        }
        outputs
    }
}

/// Writes one event to `sm.workorders.v1`, keyed (and its envelope's aggregate named) by the
/// order; caused by the input, or with `origin` an event of the clock.
fn emit<T: DomainEvent>(outputs: &mut Outputs, origin: &Option<(TenantId, Timestamp)>, id: &str, payload: T) {
    let id = AssetId(id.to_owned());
    match origin {
        Some((tenant, at)) => outputs.push_origin(topics::WORKORDERS, tenant.clone(), id, *at, payload),
        None => outputs.push_for_asset(topics::WORKORDERS, id, payload),
    }
}

fn push_event(outputs: &mut Outputs, event: &WorkOrderEvent, origin: &Option<(TenantId, Timestamp)>) {
    let id = event.work_order_id().to_owned();
    match event.clone() {
        WorkOrderEvent::Proposed(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Updated(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Approved(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Rejected(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Deferred(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Scheduled(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Rescheduled(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Started(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Completed(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Cancelled(e) => emit(outputs, origin, &id, e),
        WorkOrderEvent::Superseded(e) => emit(outputs, origin, &id, e),
    }
}

impl Handler for SchedulingAgent {
    type Input = SchedulingRequest;

    async fn handle(
        &mut self,
        input: &Envelope<SchedulingRequest>,
        source: &Source<'_>,
    ) -> Result<Outputs, HandleError> {
        let Some(key) = source.key.map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Err(Rejection::new("no_site_key", "records on sm.commands.v1 are keyed by tenant/site").into());
        };
        let site = key.split_once('/').map_or(key.as_str(), |(_, site)| site).to_owned();
        Ok(match &input.payload {
            SchedulingRequest::Prediction(prediction) => {
                self.on_prediction(input, prediction, &key, &site, source.partition)
            }
            SchedulingRequest::Command(command) => {
                if command.site != site {
                    return Err(Rejection::new(
                        "wrong_site_key",
                        format!("a command for site {} keyed by {key}: key it by tenant/site", command.site),
                    )
                    .into());
                }
                self.on_command(input, command, &key, source.partition)
            }
        })
    }

    fn state_topic(&self) -> Option<&'static str> {
        Some(topics::SCHEDULING_STATE)
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Some(rest) = key.strip_prefix(ORDER_PREFIX.as_bytes()) {
            self.orders.restore(rest, value);
        } else if let Some(rest) = key.strip_prefix(SITE_PREFIX.as_bytes()) {
            self.sites.restore(rest, value);
        }
        // Plans depend on the roster and the clock too: look at every site again.
        self.replan_all = true;
    }

    fn checkpoint(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let orders = self.orders.checkpoint().into_iter().map(|(k, v)| (format!("{ORDER_PREFIX}{k}"), v));
        let sites = self.sites.checkpoint().into_iter().map(|(k, v)| (format!("{SITE_PREFIX}{k}"), v));
        orders.chain(sites).collect()
    }

    fn committed(&mut self) {
        self.orders.committed();
        self.sites.committed();
    }

    fn rolled_back(&mut self) {
        self.orders.rollback();
        self.sites.rollback();
    }

    fn assigned(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if topic == topics::COMMANDS {
                self.owned.insert(*partition);
                self.replan_all = true;
            }
        }
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if topic == topics::COMMANDS {
                self.owned.remove(partition);
            }
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.settings.replan_interval_ms))
    }

    fn tick(&mut self, now: Timestamp) -> Outputs {
        self.replan(now)
    }
}

/// Loads the roster table (`sm.technicians.v1`) and keeps following it.
pub async fn follow_roster(
    config: &KafkaConfig,
    topic: &str,
) -> Result<(Table<TechnicianRegistered>, tokio::task::JoinHandle<()>), sm_kafka::changelog::ChangelogError> {
    Table::follow(config, topic, "sm-scheduling-roster").await
}

/// Loads the asset registry table and keeps following it.
pub async fn follow_assets(
    config: &KafkaConfig,
    topic: &str,
) -> Result<(Table<AssetRegistered>, tokio::task::JoinHandle<()>), sm_kafka::changelog::ChangelogError> {
    Table::follow(config, topic, "sm-scheduling-assets").await
}
