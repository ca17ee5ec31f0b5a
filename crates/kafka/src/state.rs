//! Keyed agent state that survives restarts: the bookkeeping behind [`Handler::state_topic`].
//!
//! Every key changed since the last commit is written (postcard: compact binary serde, exact
//! for floats, several times smaller and faster than JSON for detector windows) to the agent's compacted
//! changelog topic inside the same transaction as the input offsets, so after a crash the
//! restored state is exactly the state as of the committed offsets: nothing is forgotten and
//! nothing re-alerts. An abandoned transaction puts the changed keys back as they were
//! (an undo log holds the value each key had at the last commit).
//!
//! [`Handler::state_topic`]: crate::Handler::state_topic

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// State per key (a sensor, an asset), with an undo log for the open transaction.
#[derive(Debug)]
pub struct StateStore<S> {
    entries: HashMap<String, S>,
    /// Value at the last commit of every key changed since (`None`: it did not exist).
    undo: HashMap<String, Option<S>>,
}

impl<S> Default for StateStore<S> {
    fn default() -> Self {
        Self { entries: HashMap::new(), undo: HashMap::new() }
    }
}

impl<S: Clone + Serialize + DeserializeOwned> StateStore<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&S> {
        self.entries.get(key)
    }

    /// The state of `key` for changing (created with `init` if absent); the change is
    /// checkpointed with the next commit.
    pub fn get_mut_or_insert_with(&mut self, key: &str, init: impl FnOnce() -> S) -> &mut S {
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_owned(), self.entries.get(key).cloned());
        }
        self.entries.entry(key.to_owned()).or_insert_with(init)
    }

    /// The state of `key` for changing, if it exists.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut S> {
        if !self.entries.contains_key(key) {
            return None;
        }
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_owned(), self.entries.get(key).cloned());
        }
        self.entries.get_mut(key)
    }

    /// Forgets `key`; the next commit writes a tombstone, so compaction drops it for good.
    pub fn remove(&mut self, key: &str) -> Option<S> {
        let removed = self.entries.remove(key)?;
        self.undo.entry(key.to_owned()).or_insert_with(|| Some(removed.clone()));
        Some(removed)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &S)> {
        self.entries.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies one committed changelog record. Keys changed in the open transaction keep
    /// their newer value. A record that does not decode (state written by an incompatible
    /// version) is dropped with a warning: the key starts afresh rather than the agent
    /// stopping.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        if self.undo.contains_key(key.as_ref()) {
            return;
        }
        match value.map(postcard::from_bytes::<S>) {
            Some(Ok(state)) => {
                self.entries.insert(key.into_owned(), state);
            }
            Some(Err(error)) => {
                tracing::warn!(key = %key, error = %error, "checkpointed state does not decode; starting this key afresh");
                self.entries.remove(key.as_ref());
            }
            None => {
                self.entries.remove(key.as_ref());
            }
        }
    }

    /// Records for every key changed since the last commit.
    pub fn checkpoint(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.undo
            .keys()
            .map(|key| {
                let value = self.entries.get(key).map(|state| postcard::to_stdvec(state).expect("state serialises"));
                (key.clone(), value)
            })
            .collect()
    }

    /// The checkpoint committed: the current values are the new baseline.
    pub fn committed(&mut self) {
        self.undo.clear();
    }

    /// The open transaction was abandoned: every key goes back to its value at the last commit.
    pub fn rollback(&mut self) {
        for (key, before) in self.undo.drain() {
            match before {
                Some(state) => {
                    self.entries.insert(key, state);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

/// Implements the state hooks of [`crate::Handler`] for a handler that keeps its state in
/// a [`StateStore`] field: `sm_kafka::state_hooks!(state, topics::ANOMALY_STATE);` inside
/// `impl Handler for ...`.
#[macro_export]
macro_rules! state_hooks {
    ($field:ident, $topic:expr) => {
        fn state_topic(&self) -> Option<&'static str> {
            Some($topic)
        }

        fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
            self.$field.restore(key, value);
        }

        fn checkpoint(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
            self.$field.checkpoint()
        }

        fn committed(&mut self) {
            self.$field.committed();
        }

        fn rolled_back(&mut self) {
            self.$field.rollback();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_the_last_committed_values() {
        let mut store = StateStore::<u32>::new();
        *store.get_mut_or_insert_with("a", || 1) += 1;
        assert_eq!(store.checkpoint(), vec![("a".to_owned(), Some(postcard::to_stdvec(&2u32).unwrap()))]);
        store.committed();
        assert!(store.checkpoint().is_empty());
        *store.get_mut_or_insert_with("a", || 0) += 10;
        *store.get_mut_or_insert_with("b", || 5) += 1;
        store.rollback();
        assert_eq!(store.get("a"), Some(&2));
        assert_eq!(store.get("b"), None);
        assert!(store.checkpoint().is_empty());
    }

    #[test]
    fn a_removed_key_is_a_tombstone_and_comes_back_on_rollback() {
        let mut store = StateStore::<u32>::new();
        *store.get_mut_or_insert_with("a", || 1) += 1;
        store.committed();
        assert_eq!(store.remove("a"), Some(2));
        assert_eq!(store.checkpoint(), vec![("a".to_owned(), None)]);
        store.rollback();
        assert_eq!(store.get("a"), Some(&2));
        assert_eq!(store.remove("missing"), None);
    }

    #[test]
    fn restore_keeps_keys_changed_in_the_open_transaction() {
        let mut store = StateStore::<u32>::new();
        let encoded = |v: u32| postcard::to_stdvec(&v).unwrap();
        store.restore(b"a", Some(&encoded(7)));
        store.restore(b"b", Some(&encoded(8)));
        *store.get_mut("a").unwrap() = 9;
        store.restore(b"a", Some(&encoded(7)));
        store.restore(b"b", None);
        store.restore(b"c", Some(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(store.get("a"), Some(&9));
        assert_eq!(store.get("b"), None);
        assert_eq!(store.get("c"), None);
    }
}
