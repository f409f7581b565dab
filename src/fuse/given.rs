//! Which node the kernel was given recently for a name: a READDIRPLUS
//! listing the name again takes that node back (after checking it is still
//! known by that name) and reports its attributes, instead of resolving the
//! name through every layer again. Listing a directory a second time then
//! costs one stat per entry.
//!
//! Only a hint: entries are keyed by a hash of (directory, name); names
//! removed or renamed are dropped; a node no longer known by the name, or a
//! collision, falls back to a full lookup; a full shard is simply emptied.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Entries per shard before it is emptied (16 bytes each).
const SHARD_MAX: usize = 1 << 16;

pub struct Given {
    /// (directory, name) hash → the node given and when.
    shards: Vec<Mutex<HashMap<u64, (u64, Instant)>>>,
    hasher: RandomState,
    /// How long a given entry stays fresh: half the kernel's timeout, so a
    /// name skipped is never one whose kernel entry is about to expire.
    fresh_for: Duration,
}

impl Given {
    pub fn new(ttl: Duration) -> Self {
        Given {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            fresh_for: ttl / 2,
        }
    }

    fn key(&self, parent: u64, name: &OsStr) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, Instant)>> {
        self.shards[key as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel was just given `parent/name` (node `ino`) with a nonzero
    /// timeout.
    pub fn note(&self, parent: u64, name: &OsStr, ino: u64) {
        if self.fresh_for.is_zero() {
            return;
        }
        let key = self.key(parent, name);
        let mut s = self.shard(key);
        if s.len() >= SHARD_MAX {
            s.clear();
        }
        s.insert(key, (ino, Instant::now()));
    }

    /// `parent/name` was removed or renamed: what was given for it is no
    /// longer what the name shows.
    pub fn drop_name(&self, parent: u64, name: &OsStr) {
        let key = self.key(parent, name);
        self.shard(key).remove(&key);
    }

    /// The node the kernel most likely still holds as `parent/name`.
    pub fn fresh(&self, parent: u64, name: &OsStr) -> Option<u64> {
        if self.fresh_for.is_zero() {
            return None;
        }
        let key = self.key(parent, name);
        self.shard(key)
            .get(&key)
            .filter(|(_, t)| t.elapsed() < self.fresh_for)
            .map(|(ino, _)| *ino)
    }
}
