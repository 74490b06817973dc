//! The room registry's storage, shared by [`crate::Hub`] and [`crate::Relay`]: rooms by name,
//! sharded so that creating and dropping rooms on many cores rarely contends, and no lock is
//! global.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

/// Registry shards: enough that creating and dropping rooms on many cores rarely contends.
const SHARDS: usize = 64;

/// One shard: rooms by name.
pub(crate) type Shard<T> = RwLock<HashMap<Arc<str>, Arc<T>>>;

/// Rooms of type `T` by name.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    shards: Box<[Shard<T>]>,
    hasher: RandomState,
}

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The shard that holds `name`.
    #[allow(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the slice's length, which is SHARDS > 0"
    )]
    pub(crate) fn shard(&self, name: &str) -> &Shard<T> {
        let hash = usize::try_from(self.hasher.hash_one(name) % SHARDS as u64).unwrap_or(0);
        &self.shards[hash % self.shards.len()]
    }

    /// Every shard, for sweeps and listings.
    pub(crate) fn shards(&self) -> impl Iterator<Item = &Shard<T>> {
        self.shards.iter()
    }

    /// The room named `name`, if there is one.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<T>> {
        self.shard(name).read().get(name).cloned()
    }

    /// The room named `name`, created with `make` (given the shared name) if there is none.
    pub(crate) fn get_or_create(&self, name: &str, make: impl FnOnce(&Arc<str>) -> T) -> Arc<T> {
        let shard = self.shard(name);
        if let Some(entry) = shard.read().get(name) {
            return entry.clone();
        }
        shard
            .write()
            .entry(Arc::from(name))
            .or_insert_with_key(|name| Arc::new(make(name)))
            .clone()
    }

    /// Disposes of a room: removes `entry` if it is still the room named `name` and `dispose`
    /// agrees. `dispose` runs with the shard locked, so no joiner finds the room meanwhile; it
    /// marks the room closed, for joiners that already hold it (they look it up again).
    /// The one place rooms leave the registry, whichever engine keeps them (sweeps aside).
    pub(crate) fn dispose(&self, name: &str, entry: &Arc<T>, dispose: impl FnOnce(&T) -> bool) {
        let mut shard = self.shard(name).write();
        if shard
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
            && dispose(entry)
        {
            shard.remove(name);
        }
    }

    /// How many rooms there are.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}
