//! Each technician's booked time, and the free gaps left in their shifts: what the greedy
//! planner and the solver's repairs place work into.

use crate::{Assignment, Instance, Minute, Order, Plan, Window};
use std::collections::BTreeMap;

/// Booked intervals and minutes per local day, per technician.
#[derive(Debug, Clone)]
pub struct Timelines {
    busy: Vec<Vec<Window>>,
    used: Vec<BTreeMap<i64, Minute>>,
}

/// A free span inside one shift, with the minutes left in that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub technician: usize,
    pub window: Window,
    pub day: i64,
    pub day_left: Minute,
}

impl Timelines {
    pub fn new(instance: &Instance) -> Self {
        Self {
            busy: vec![Vec::new(); instance.technicians.len()],
            used: vec![BTreeMap::new(); instance.technicians.len()],
        }
    }

    /// The timelines of `plan`'s bookings.
    pub fn of(instance: &Instance, plan: &Plan) -> Self {
        let mut timelines = Self::new(instance);
        for (order, assignment) in instance.orders.iter().zip(&plan.assignments) {
            if let Some(assignment) = assignment {
                timelines.book(instance, order, *assignment);
            }
        }
        timelines
    }

    pub fn book(&mut self, instance: &Instance, order: &Order, at: Assignment) {
        let window = Window { start: at.start, end: at.start + order.duration };
        let busy = &mut self.busy[at.technician];
        let index = busy.partition_point(|w| w.start < window.start);
        busy.insert(index, window);
        let day = instance.technicians[at.technician].day_of(at.start);
        *self.used[at.technician].entry(day).or_default() += order.duration;
    }

    pub fn release(&mut self, instance: &Instance, order: &Order, at: Assignment) {
        let window = Window { start: at.start, end: at.start + order.duration };
        let busy = &mut self.busy[at.technician];
        if let Some(index) = busy.iter().position(|w| *w == window) {
            busy.remove(index);
        }
        let day = instance.technicians[at.technician].day_of(at.start);
        if let Some(used) = self.used[at.technician].get_mut(&day) {
            *used -= order.duration;
        }
    }

    /// The free gaps of `technician`'s shifts, in time order.
    pub fn gaps(&self, instance: &Instance, technician: usize) -> Vec<Gap> {
        let tech = &instance.technicians[technician];
        let busy = &self.busy[technician];
        let mut gaps = Vec::new();
        let mut next_busy = 0;
        for shift in &tech.shifts {
            let day = tech.day_of(shift.start);
            let day_left = tech.max_minutes_per_day - self.used[technician].get(&day).copied().unwrap_or(0);
            while next_busy < busy.len() && busy[next_busy].end <= shift.start {
                next_busy += 1;
            }
            let mut cursor = shift.start;
            let mut index = next_busy;
            while index < busy.len() && busy[index].start < shift.end {
                if busy[index].start > cursor {
                    gaps.push(Gap {
                        technician,
                        window: Window { start: cursor, end: busy[index].start },
                        day,
                        day_left,
                    });
                }
                cursor = cursor.max(busy[index].end);
                index += 1;
            }
            if cursor < shift.end {
                gaps.push(Gap { technician, window: Window { start: cursor, end: shift.end }, day, day_left });
            }
        }
        gaps
    }

    /// The earliest start for `order` on `technician`, if any gap takes it.
    pub fn earliest_start(&self, instance: &Instance, order: &Order, technician: usize) -> Option<Minute> {
        self.gaps(instance, technician).into_iter().find_map(|gap| fits(order, &gap))
    }
}

/// The earliest start of `order` inside `gap`, if it fits (ready time, length, day's minutes).
pub fn fits(order: &Order, gap: &Gap) -> Option<Minute> {
    let start = gap.window.start.max(order.ready);
    (start + order.duration <= gap.window.end && order.duration <= gap.day_left).then_some(start)
}
