//! The offset store: the next Kafka offset of each partition a projection has written,
//! stored in the same transaction as its rows. A restarted writer seeks to these offsets, so
//! every record is applied exactly once to the database even though Kafka never learns of it.

use sm_kafka::PartitionOffset;

/// Records `offsets` for `projection` inside `tx` (the transaction holding its rows).
pub async fn store(
    tx: &tokio_postgres::Transaction<'_>,
    projection: &str,
    offsets: &[PartitionOffset],
) -> Result<(), tokio_postgres::Error> {
    if offsets.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
    let next: Vec<i64> = offsets.iter().map(|o| o.next_offset).collect();
    tx.execute(
        "INSERT INTO sm_projection_offsets (projection, topic, partition, next_offset)
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
         ON CONFLICT (projection, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        &[&projection, &topics, &partitions, &next],
    )
    .await?;
    Ok(())
}

/// The stored next offsets of `projection` for `partitions` (absent: never written).
pub async fn load(
    client: &tokio_postgres::Client,
    projection: &str,
    partitions: &[(String, i32)],
) -> Result<Vec<PartitionOffset>, tokio_postgres::Error> {
    let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let numbers: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
    let rows = client
        .query(
            "SELECT o.topic, o.partition, o.next_offset
             FROM sm_projection_offsets o
             JOIN unnest($2::text[], $3::int[]) AS wanted(topic, partition) USING (topic, partition)
             WHERE o.projection = $1",
            &[&projection, &topics, &numbers],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PartitionOffset { topic: row.get(0), partition: row.get(1), next_offset: row.get(2) })
        .collect())
}

/// Forgets every offset of `projection` (inside `tx`), so it replays its topics from the start.
pub async fn reset(tx: &tokio_postgres::Transaction<'_>, projection: &str) -> Result<u64, tokio_postgres::Error> {
    tx.execute("DELETE FROM sm_projection_offsets WHERE projection = $1", &[&projection]).await
}
