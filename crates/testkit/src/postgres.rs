//! A PostgreSQL schema of one test's own, so tests that create the same tables (the
//! projector's migrations) run side by side on the stack's one database.

use crate::{Stack, unique};

/// A fresh schema, dropped when the value is dropped (also when the test panics).
pub struct ScratchSchema {
    /// The stack's database URL with `search_path` set to the schema: connect with this.
    pub url: String,
    /// The same as the query service's role (`sm_query`), which reads under row-level
    /// security: serve the query service from this, once the owner migrated the schema.
    pub query_url: String,
    admin_url: String,
    schema: String,
}

impl ScratchSchema {
    /// Creates a schema named after `prefix` (made unique).
    pub async fn create(stack: &Stack, prefix: &str) -> Self {
        let schema = unique(prefix).replace('-', "_");
        let (admin, connection) = tokio_postgres::connect(&stack.postgres_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}; start the stack", stack.postgres_url));
        tokio::spawn(connection);
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let separator = if stack.postgres_url.contains('?') { '&' } else { '?' };
        let options = format!("options=-csearch_path%3D{schema}");
        let url = format!("{}{separator}{options}", stack.postgres_url);
        let separator = if stack.query_postgres_url.contains('?') { '&' } else { '?' };
        let query_url = format!("{}{separator}{options}", stack.query_postgres_url);
        Self { url, query_url, admin_url: stack.postgres_url.clone(), schema }
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.admin_url.clone(), self.schema.clone());
        // Drop cannot await, and may run while the test's runtime unwinds: use a fresh one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
            });
        })
        .join();
    }
}
