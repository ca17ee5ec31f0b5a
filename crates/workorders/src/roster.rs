//! The technician roster: a TOML file applied with `smctl technicians apply` (one
//! `TechnicianRegistered` per technician), and how a registration becomes the optimiser's
//! [`sm_planner::Technician`] for a planning horizon: weekly shifts in the technician's own
//! time zone (daylight saving included), less their leave.
//!
//! ```toml
//! [[technicians]]
//! id = "t-anna"
//! name = "Anna Berg"
//! site = "plant-a"
//! time_zone = "Europe/Berlin"
//! max_hours_per_day = 8
//! skills = { mechanical = 3, vibration = 4 }
//! shifts = [{ days = "Mon-Fri", from = "07:00", to = "15:30" }]
//! leave = [{ from = "2026-12-24", to = "2026-12-27", reason = "holidays" }]
//! ```
//!
//! Leave takes local dates (whole days, both inclusive) or RFC 3339 times.

use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde::Deserialize;
use sm_domain::Timestamp;
use sm_domain::roster::{Leave, TechnicianRegistered, TechnicianSkill, WeeklyShift};
use sm_planner::{Minute, Technician, Window};
use std::collections::{BTreeMap, BTreeSet};

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// A roster file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    pub technicians: Vec<RosterEntry>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    pub id: String,
    pub name: String,
    pub site: String,
    pub time_zone: String,
    pub max_hours_per_day: f64,
    /// Skill → level, 1 (trainee) to 5 (expert).
    pub skills: BTreeMap<String, i32>,
    pub shifts: Vec<ShiftPattern>,
    #[serde(default)]
    pub leave: Vec<LeaveEntry>,
    /// false: taken off the roster (their history stays).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// `days` is `Mon-Fri`, `Sat`, `Mon,Wed,Fri`...; `from`/`to` are local `HH:MM`; a `to` not
/// after `from` ends the next day (a night shift).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftPattern {
    pub days: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveEntry {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub reason: String,
}

/// What is wrong with a roster, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("the roster is not valid TOML for a roster: {0}")]
    Parse(String),
    #[error("technician {id}: {what}")]
    Invalid { id: String, what: String },
    #[error("technician id {0} appears twice; each technician is one entry")]
    Duplicate(String),
}

impl RosterFile {
    pub fn parse(text: &str) -> Result<Self, RosterError> {
        toml::from_str(text).map_err(|e| RosterError::Parse(e.to_string()))
    }

    /// The registrations the file asks for, by `principal`, every entry checked.
    pub fn registrations(&self, principal: &str) -> Result<Vec<TechnicianRegistered>, RosterError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(self.technicians.len());
        for entry in &self.technicians {
            if !seen.insert(entry.id.as_str()) {
                return Err(RosterError::Duplicate(entry.id.clone()));
            }
            out.push(entry.registration(principal)?);
        }
        Ok(out)
    }
}

impl RosterEntry {
    fn registration(&self, principal: &str) -> Result<TechnicianRegistered, RosterError> {
        let invalid = |what: String| RosterError::Invalid { id: self.id.clone(), what };
        if self.id.trim().is_empty() || self.site.trim().is_empty() {
            return Err(invalid("id and site must not be empty".into()));
        }
        let zone: Tz = self.time_zone.parse().map_err(|_| {
            invalid(format!("time_zone {:?} is not an IANA zone (write e.g. Europe/Berlin or UTC)", self.time_zone))
        })?;
        if !(self.max_hours_per_day > 0.0 && self.max_hours_per_day <= 24.0) {
            return Err(invalid(format!("max_hours_per_day {} must be in (0, 24]", self.max_hours_per_day)));
        }
        if self.skills.is_empty() {
            return Err(invalid("has no skills: list at least one, e.g. skills = { mechanical = 2 }".into()));
        }
        let mut skills = Vec::new();
        for (skill, level) in &self.skills {
            if !(1..=5).contains(level) {
                return Err(invalid(format!("skill {skill} has level {level}; levels are 1 (trainee) to 5 (expert)")));
            }
            skills.push(TechnicianSkill { skill: skill.clone(), level: *level });
        }
        let mut shifts = Vec::new();
        for pattern in &self.shifts {
            let start = clock(&pattern.from).map_err(&invalid)?;
            let mut end = clock(&pattern.to).map_err(&invalid)?;
            if end <= start {
                end += 24 * 60;
            }
            for weekday in weekdays(&pattern.days).map_err(&invalid)? {
                shifts.push(WeeklyShift { weekday, start_minute: start, end_minute: end });
            }
        }
        if shifts.is_empty() && self.active {
            return Err(invalid(
                "has no shifts: add e.g. shifts = [{ days = \"Mon-Fri\", from = \"07:00\", to = \"15:00\" }]".into(),
            ));
        }
        let mut leave = Vec::new();
        for entry in &self.leave {
            let start = instant(&entry.from, zone, false).map_err(&invalid)?;
            let end = instant(&entry.to, zone, true).map_err(&invalid)?;
            if end <= start {
                return Err(invalid(format!("leave {} to {} ends before it starts", entry.from, entry.to)));
            }
            leave.push(Leave { start, end, reason: entry.reason.clone() });
        }
        Ok(TechnicianRegistered {
            technician_id: self.id.clone(),
            name: self.name.clone(),
            site: self.site.clone(),
            time_zone: self.time_zone.clone(),
            skills,
            shifts,
            leave,
            max_minutes_per_day: (self.max_hours_per_day * 60.0).round() as i32,
            active: self.active,
            principal: principal.to_owned(),
        })
    }
}

/// `HH:MM` as minutes after midnight.
fn clock(text: &str) -> Result<i32, String> {
    let bad = || format!("{text:?} is not a time of day; write HH:MM (24-hour)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `Mon-Fri`, `Sat,Sun`, `Mon` as ISO weekdays (1 Monday).
fn weekdays(text: &str) -> Result<Vec<i32>, String> {
    let day = |name: &str| {
        DAYS.iter()
            .position(|d| name.trim().to_ascii_lowercase().starts_with(d))
            .map(|i| i as i32 + 1)
            .ok_or_else(|| format!("{name:?} is not a weekday; write Mon, Tue, ... or a range Mon-Fri"))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    out.push(d);
                    if d == to {
                        break;
                    }
                    d = d % 7 + 1;
                }
            }
            None => out.push(day(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A local date (its start, or with `end_of_day` the next midnight) or an RFC 3339 time.
fn instant(text: &str, zone: Tz, end_of_day: bool) -> Result<Timestamp, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let date = if end_of_day { date.succ_opt().unwrap_or(date) } else { date };
        return Ok(local(zone, date.and_hms_opt(0, 0, 0).expect("midnight exists")));
    }
    sm_domain::rfc3339::parse(text)
        .map_err(|why| format!("{text:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time: {why}"))
}

/// The instant of a local wall-clock time; in a DST gap, the moment the clocks jump to.
fn local(zone: Tz, at: NaiveDateTime) -> Timestamp {
    let micros = match zone.from_local_datetime(&at) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_micros(),
        LocalResult::None => {
            let later = at + chrono::Duration::hours(1);
            zone.from_local_datetime(&later).earliest().map(|t| t.timestamp_micros()).unwrap_or(0)
        }
    };
    Timestamp(micros)
}

/// `registration` as the optimiser sees them over `[start, start + days)`, in minutes from
/// `start`: shifts in their zone, leave taken out, sorted and disjoint. `None` for a
/// technician off the roster or with an unknown zone (the file was checked when applied).
pub fn technician(registration: &TechnicianRegistered, start: Timestamp, days: i64) -> Option<Technician> {
    if !registration.active {
        return None;
    }
    let zone: Tz = registration.time_zone.parse().ok()?;
    let to_minute = |t: Timestamp| (t.0 - start.0).div_euclid(MICROS_PER_MINUTE);
    let horizon = Window { start: 0, end: days * 24 * 60 };
    let first_day = zone.timestamp_micros(start.0).single()?.date_naive().pred_opt()?;
    let mut shifts = Vec::new();
    for offset in 0..=days + 1 {
        let Some(date) = first_day.checked_add_days(chrono::Days::new(offset as u64)) else { continue };
        let weekday = date.weekday().number_from_monday() as i32;
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        for shift in registration.shifts.iter().filter(|s| s.weekday == weekday) {
            let at = |minute: i32| local(zone, midnight + chrono::Duration::minutes(minute as i64));
            let window = Window { start: to_minute(at(shift.start_minute)), end: to_minute(at(shift.end_minute)) };
            let clipped = Window { start: window.start.max(horizon.start), end: window.end.min(horizon.end) };
            if !clipped.is_empty() {
                shifts.push(clipped);
            }
        }
    }
    // Leave rounds outwards: a booking never overlaps a part of a minute of it.
    let leave: Vec<Window> = registration
        .leave
        .iter()
        .map(|l| Window { start: to_minute(l.start), end: -to_minute(Timestamp(2 * start.0 - l.end.0)) })
        .collect();
    let shifts = subtract(merge(shifts), &leave);
    let utc_offset = zone.timestamp_micros(start.0).single().map(|t| {
        use chrono::Offset;
        t.offset().fix().local_minus_utc() as Minute / 60
    })?;
    Some(Technician {
        id: registration.technician_id.clone(),
        site: registration.site.clone(),
        skills: registration.skills.iter().map(|s| (s.skill.clone(), s.level)).collect(),
        shifts,
        max_minutes_per_day: registration.max_minutes_per_day as Minute,
        utc_offset,
    })
}

/// Sorted, overlapping or touching windows joined.
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort();
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for w in windows {
        match out.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => out.push(w),
        }
    }
    out
}

/// `windows` less every span of `holes`.
pub(crate) fn subtract(windows: Vec<Window>, holes: &[Window]) -> Vec<Window> {
    let mut out = Vec::new();
    for w in windows {
        let mut pieces = vec![w];
        for hole in holes.iter().filter(|h| !h.is_empty()) {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    if !p.overlaps(hole) {
                        return vec![p];
                    }
                    [Window { start: p.start, end: hole.start }, Window { start: hole.end, end: p.end }]
                        .into_iter()
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROSTER: &str = r#"
[[technicians]]
id = "t-anna"
name = "Anna Berg"
site = "plant-a"
time_zone = "Europe/Berlin"
max_hours_per_day = 8
skills = { mechanical = 3, vibration = 4 }
shifts = [{ days = "Mon-Fri", from = "07:00", to = "15:00" }]
leave = [{ from = "2026-12-09", to = "2026-12-09", reason = "training" }]

[[technicians]]
id = "t-night"
name = "Night Owl"
site = "plant-a"
time_zone = "UTC"
max_hours_per_day = 10
skills = { electrical = 2 }
shifts = [{ days = "Sat,Sun", from = "22:00", to = "06:00" }]
"#;

    fn at(text: &str) -> Timestamp {
        sm_domain::rfc3339::parse(text).unwrap()
    }

    #[test]
    fn shifts_are_local_and_leave_is_taken_out() {
        let registrations = RosterFile::parse(ROSTER).unwrap().registrations("user:admin").unwrap();
        assert_eq!(registrations.len(), 2);
        assert_eq!(registrations[0].max_minutes_per_day, 480);
        // Monday 2026-12-07 00:00 UTC, one week.
        let start = at("2026-12-07T00:00:00Z");
        let anna = technician(&registrations[0], start, 7).unwrap();
        // Berlin is UTC+1 in December: 07:00 local is 06:00 UTC; Wednesday the 9th is leave.
        let days: Vec<i64> = anna.shifts.iter().map(|w| w.start / (24 * 60)).collect();
        assert_eq!(days, vec![0, 1, 3, 4]);
        assert_eq!(anna.shifts[0], Window { start: 6 * 60, end: 14 * 60 });
        assert_eq!(anna.utc_offset, 60);
        assert!(anna.qualifies(&[("vibration".into(), 4)]) && !anna.qualifies(&[("vibration".into(), 5)]));
        // Night shifts run past midnight: the Sunday before ends on Monday at 06:00, Saturday's
        // runs to Sunday 06:00, and Sunday's is cut at the horizon.
        let night = technician(&registrations[1], start, 7).unwrap();
        let day = 24 * 60;
        assert_eq!(
            night.shifts,
            vec![
                Window { start: 0, end: 6 * 60 },
                Window { start: 5 * day + 22 * 60, end: 6 * day + 6 * 60 },
                Window { start: 6 * day + 22 * 60, end: 7 * day },
            ]
        );
    }

    #[test]
    fn shifts_follow_daylight_saving_in_the_technicians_zone() {
        let mut registration = RosterFile::parse(ROSTER).unwrap().registrations("a").unwrap().remove(0);
        registration.leave.clear();
        // Berlin leaves summer time on Sunday 2026-10-25: 07:00 local is 05:00 UTC before, 06:00 after.
        let start = at("2026-10-23T00:00:00Z");
        let anna = technician(&registration, start, 4).unwrap();
        assert_eq!(anna.shifts[0].start, 5 * 60, "Friday, summer time");
        assert_eq!(anna.shifts[1].start, 3 * 1440 + 6 * 60, "Monday, winter time");
    }

    #[test]
    fn a_bad_roster_is_refused_naming_the_technician() {
        let bad = |from: &str, to: &str| {
            RosterFile::parse(&ROSTER.replacen(from, to, 1)).and_then(|r| r.registrations("a")).unwrap_err().to_string()
        };
        assert!(bad("Europe/Berlin", "Mars/Olympus").contains("t-anna: time_zone \"Mars/Olympus\""));
        assert!(bad("vibration = 4", "vibration = 9").contains("levels are 1 (trainee) to 5"));
        assert!(bad("Mon-Fri", "Mon-Fry").contains("not a weekday"));
        assert!(bad("07:00", "7am").contains("HH:MM"));
        assert!(bad("to = \"2026-12-09\"", "to = \"2026-12-01\"").contains("ends before it starts"));
        assert!(bad("t-night", "t-anna").contains("appears twice"));
        assert!(bad("max_hours_per_day = 8", "max_hours_per_day = 0").contains("max_hours_per_day"));
        assert!(bad("site = \"plant-a\"", "sight = \"plant-a\"").contains("not valid TOML"));
    }

    #[test]
    fn an_inactive_technician_is_in_no_plan() {
        let mut registration = RosterFile::parse(ROSTER).unwrap().registrations("a").unwrap().remove(0);
        registration.active = false;
        assert!(technician(&registration, at("2026-12-07T00:00:00Z"), 7).is_none());
    }
}
