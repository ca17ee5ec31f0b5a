//! Exact conversions between the service's microseconds and PostgreSQL's `timestamptz` and
//! `interval`, in the binary protocol.
//!
//! PostgreSQL stores both as 64-bit microseconds (timestamps counted from 2000-01-01), so
//! binding them as these newtypes is exact at any date, with no float on the way and no
//! conversion written into the SQL: `occurred_at < $2` compares a column with a parameter of
//! the column's own type, which keeps every predicate usable by an index. (The alternative,
//! `to_timestamp($2 / 1e6)`, goes through a double; `extract(epoch ...)` returns numeric.)
//! This is deliberately not chrono or time: microseconds are the domain's unit already.

use bytes::BytesMut;
use sm_identity::TenantScope;
use std::error::Error;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// Microseconds from 1970-01-01 (Unix) to 2000-01-01 (PostgreSQL's epoch).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

type BoxError = Box<dyn Error + Sync + Send>;

/// A `timestamptz` as microseconds since the Unix epoch. `i64::MIN` and `i64::MAX` stand for
/// `-infinity` and `infinity`, which is how an open range bound is bound as a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Before every timestamp: the lower bound of "from the beginning".
    pub const NEG_INFINITY: Self = Self(i64::MIN);
    /// After every timestamp: the upper bound of "until the end".
    pub const INFINITY: Self = Self(i64::MAX);
}

impl ToSql for PgTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let wire = match self.0 {
            i64::MIN | i64::MAX => self.0,
            micros => micros
                .checked_sub(POSTGRES_EPOCH_MICROS)
                .ok_or_else(|| format!("timestamp {micros} µs is out of PostgreSQL's range"))?,
        };
        i64::to_sql(&wire, &Type::INT8, out)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let wire = i64::from_sql(&Type::INT8, raw)?;
        Ok(match wire {
            i64::MIN | i64::MAX => Self(wire),
            // PostgreSQL's range (up to 294276 AD) is far inside i64 µs from 1970.
            _ => Self(wire + POSTGRES_EPOCH_MICROS),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// An `interval` of a whole number of microseconds (no days or months, which `date_bin`
/// refuses anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgInterval(pub i64);

impl ToSql for PgInterval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        // Wire format: microseconds (i64), days (i32), months (i32).
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&0_i32.to_be_bytes());
        out.extend_from_slice(&0_i32.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

/// The role every tenant-scoped transaction runs as: not the tables' owner, so row-level
/// security applies (the projector's migrations create it and its policies). The service
/// also logs in as a member of it that owns nothing, so what is not scoped sees no rows.
pub use sm_storage::roles::READER_ROLE;

/// A transaction that sees only `scope`'s rows: `sm.tenant_id` and the role are set with
/// `set_config(..., true)`, so they end with the transaction and a pooled connection never
/// carries them to the next request. Read-only handlers just drop it (a rollback).
pub async fn scoped<'a>(
    client: &'a mut deadpool_postgres::Object,
    scope: &TenantScope,
) -> Result<deadpool_postgres::Transaction<'a>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let statement =
        tx.prepare_cached("SELECT set_config('role', $1, true), set_config('sm.tenant_id', $2, true)").await?;
    tx.execute(&statement, &[&READER_ROLE, &scope.as_str()]).await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_encode_relative_to_2000_and_decode_back() {
        let mut out = BytesMut::new();
        PgTimestamp(POSTGRES_EPOCH_MICROS + 5).to_sql(&Type::TIMESTAMPTZ, &mut out).unwrap();
        assert_eq!(&out[..], &5_i64.to_be_bytes());
        for micros in [0, 1_764_000_000_123_456, -62_135_596_800_000_000, i64::MIN, i64::MAX] {
            let mut out = BytesMut::new();
            PgTimestamp(micros).to_sql(&Type::TIMESTAMPTZ, &mut out).unwrap();
            assert_eq!(PgTimestamp::from_sql(&Type::TIMESTAMPTZ, &out).unwrap(), PgTimestamp(micros));
        }
    }

    #[test]
    fn infinities_stay_infinities() {
        let mut out = BytesMut::new();
        PgTimestamp::NEG_INFINITY.to_sql(&Type::TIMESTAMPTZ, &mut out).unwrap();
        assert_eq!(&out[..], &i64::MIN.to_be_bytes());
    }

    #[test]
    fn intervals_are_microseconds_only() {
        let mut out = BytesMut::new();
        PgInterval(3_600_000_000).to_sql(&Type::INTERVAL, &mut out).unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..8], &3_600_000_000_i64.to_be_bytes());
        assert!(out[8..].iter().all(|b| *b == 0));
        assert!(!<PgInterval as ToSql>::accepts(&Type::INT8));
    }
}
