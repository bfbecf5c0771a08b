//! Backend address -> (service, endpoint): how a backend->client reply
//! finds its service. Sharded by key so a generation copies only the shards
//! its change touched: one `HashMap` of every backend (100k entries at
//! 1000 x 100) would be cloned whole for every generation.

use std::sync::Arc;

use hashbrown::HashMap;

use super::{BackendRef, VipKey};
use crate::hash::FastBuildHasher;

/// log2 of the shard count. 1024 shards: ~100 backends each at 100k, so a
/// service whose hundred endpoints all change copies ~100 small shards
/// (tens of KB), and the shard vector clones in microseconds.
const SHARD_BITS: u32 = 10;
const SHARDS: usize = 1 << SHARD_BITS;

/// Nearly every backend address serves one service, so that case is stored
/// inline; the rare shared backend is listed in the shard's side map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendSlot {
    One(BackendRef),
    Many,
}

#[derive(Clone, Debug, Default)]
struct Shard {
    slots: HashMap<VipKey, BackendSlot, FastBuildHasher>,
    shared: HashMap<VipKey, Box<[BackendRef]>, FastBuildHasher>,
}

#[derive(Clone, Debug)]
pub(super) struct BackendMap {
    shards: Vec<Arc<Shard>>,
}

impl Default for BackendMap {
    fn default() -> Self {
        // One empty shard shared by every slot until written: an empty map
        // costs one allocation, not a thousand.
        let empty = Arc::new(Shard::default());
        BackendMap {
            shards: vec![empty; SHARDS],
        }
    }
}

/// The shard of `key`: a multiplicative hash's top bits (one multiply on
/// the reply path; the shard's map hashes the key again for its buckets).
#[inline]
fn shard_of(key: &VipKey) -> usize {
    (key.packed().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARD_BITS)) as usize
}

impl BackendMap {
    /// The (service, endpoint) pairs served by `key`.
    #[inline]
    pub fn get(&self, key: &VipKey) -> &[BackendRef] {
        let shard = &self.shards[shard_of(key)];
        match shard.slots.get(key) {
            Some(BackendSlot::One(r)) => std::slice::from_ref(r),
            Some(BackendSlot::Many) => shard.shared.get(key).map_or(&[], |b| &b[..]),
            None => &[],
        }
    }

    /// Adds `r` to what `key` serves.
    pub fn link(&mut self, key: VipKey, r: BackendRef) {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        match shard.slots.get(&key).copied() {
            None => {
                shard.slots.insert(key, BackendSlot::One(r));
            }
            Some(BackendSlot::One(first)) => {
                shard.slots.insert(key, BackendSlot::Many);
                shard.shared.insert(key, Box::new([first, r]));
            }
            Some(BackendSlot::Many) => {
                let mut v = shard
                    .shared
                    .get(&key)
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                v.push(r);
                shard.shared.insert(key, v.into_boxed_slice());
            }
        }
    }

    /// Removes service `service`'s entries for `key` (copying the shard
    /// only when there is one).
    pub fn unlink(&mut self, key: VipKey, service: u32) {
        let i = shard_of(&key);
        if !self.get(&key).iter().any(|r| r.service == service) {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[i]);
        match shard.slots.get(&key).copied() {
            Some(BackendSlot::One(_)) => {
                shard.slots.remove(&key);
            }
            Some(BackendSlot::Many) => {
                let rest: Vec<BackendRef> = shard
                    .shared
                    .get(&key)
                    .map(|l| l.iter().copied().filter(|r| r.service != service).collect())
                    .unwrap_or_default();
                match rest[..] {
                    [] => {
                        shard.shared.remove(&key);
                        shard.slots.remove(&key);
                    }
                    [one] => {
                        shard.shared.remove(&key);
                        shard.slots.insert(key, BackendSlot::One(one));
                    }
                    _ => {
                        shard.shared.insert(key, rest.into_boxed_slice());
                    }
                }
            }
            None => {}
        }
    }

    /// (shards shared with `other`, shards).
    pub fn sharing(&self, other: &BackendMap) -> (usize, usize) {
        super::shared_arcs(&self.shards, &other.shards)
    }
}
