//! The technician roster on `sm.technicians.v1`, compacted by technician id: the last
//! `TechnicianRegistered` of a technician is who they are now (`active: false` once they
//! leave the roster).

use crate::Timestamp;
use crate::events::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicianSkill {
    pub skill: String,
    /// 1 trainee to 5 expert.
    pub level: i32,
}

/// A shift every week, in the technician's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyShift {
    /// 1 Monday to 7 Sunday.
    pub weekday: i32,
    pub start_minute: i32,
    /// Past 1440 the shift runs into the next day.
    pub end_minute: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub start: Timestamp,
    pub end: Timestamp,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicianRegistered {
    pub technician_id: String,
    pub name: String,
    /// Home site: the one site plan they are part of.
    pub site: String,
    /// IANA time zone of their shifts.
    pub time_zone: String,
    pub skills: Vec<TechnicianSkill>,
    pub shifts: Vec<WeeklyShift>,
    pub leave: Vec<Leave>,
    pub max_minutes_per_day: i32,
    pub active: bool,
    pub principal: String,
}

impl DomainEvent for TechnicianRegistered {
    const EVENT_TYPE: &'static str = "TechnicianRegistered";
    const SCHEMA: &'static str = "technician_registered";
}
