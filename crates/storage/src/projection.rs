//! The one way to write a projection: implement [`Projection`] (how a batch of events becomes
//! rows) and run it in a [`ProjectionWriter`] on the Kafka runtime
//! (`Runtime::run_projection`). The writer buffers decoded events and, at each commit,
//! writes the batch and the offsets in one PostgreSQL transaction.
//!
//! Rebuilding a read model is `ProjectionWriter::rebuild` (clear the tables, forget the
//! offsets) and a run: the topics replay from the start into the same rows.

use crate::{Pool, StorageError, offsets};
use sm_domain::{Decode, Envelope};
use sm_kafka::{BoxError, ExternalCheckpoint, HandleError, Handler, Outputs, PartitionOffset, Source};
use std::future::Future;

/// How events of one type become rows.
pub trait Projection: Send + Sync + 'static {
    type Event: Decode;

    /// Key of the projection in the offset store; never change it once deployed.
    fn name(&self) -> &'static str;

    /// Checks one event before it is buffered. An `Err` dead-letters it with that reason, so
    /// a row the database would refuse never blocks the partition.
    fn check(&self, _event: &Envelope<Self::Event>) -> Result<(), sm_kafka::Rejection> {
        Ok(())
    }

    /// Writes a batch, in order, inside `tx`. Runs once per batch; on any error the whole
    /// transaction (rows and offsets) is rolled back and retried.
    fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<Self::Event>],
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// Empties the projection's tables (for a rebuild).
    fn clear(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
}

/// Runs a [`Projection`] effectively-once: rows and offsets in one transaction.
pub struct ProjectionWriter<P: Projection> {
    pool: Pool,
    projection: P,
    buffer: Vec<Envelope<P::Event>>,
}

impl<P: Projection> ProjectionWriter<P> {
    pub fn new(pool: Pool, projection: P) -> Self {
        Self { pool, projection, buffer: Vec::new() }
    }

    /// Clears the projection's tables and forgets its offsets, in one transaction: the next
    /// run replays its topics from the start.
    pub async fn rebuild(&self) -> Result<(), StorageError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        self.projection.clear(&tx).await?;
        offsets::reset(&tx, self.projection.name()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_batch(&mut self, offsets: &[PartitionOffset]) -> Result<(), StorageError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !self.buffer.is_empty() {
            self.projection.write(&tx, &self.buffer).await?;
        }
        offsets::store(&tx, self.projection.name(), offsets).await?;
        tx.commit().await?;
        self.buffer.clear();
        Ok(())
    }
}

impl<P: Projection> Handler for ProjectionWriter<P> {
    type Input = P::Event;

    async fn handle(&mut self, input: &Envelope<P::Event>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        self.projection.check(input)?;
        self.buffer.push(input.clone());
        Ok(Outputs::none())
    }
}

impl<P: Projection> ExternalCheckpoint for ProjectionWriter<P> {
    async fn commit(&mut self, offsets: &[PartitionOffset]) -> Result<(), BoxError> {
        self.write_batch(offsets).await.map_err(|e| Box::new(e) as BoxError)
    }

    fn rollback(&mut self) {
        self.buffer.clear();
    }

    async fn stored_offsets(&mut self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, BoxError> {
        let client = self.pool.get().await.map_err(|e| Box::new(StorageError::from(e)) as BoxError)?;
        Ok(offsets::load(&client, self.projection.name(), partitions).await?)
    }
}
