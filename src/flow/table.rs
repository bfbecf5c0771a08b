//! The per-worker flow table: a fixed-capacity slab of (key, entry) slots indexed by a
//! `hashbrown::HashTable<u32>` of slab positions.
//!
//! Why this shape:
//! - Everything is allocated in [`FlowTable::new`]; nothing on the hot path allocates. The
//!   index is created with room for twice the slab, and hashbrown only ever reallocates when
//!   `items + 1 > capacity / 2` at the moment its tombstones run out; below that it rehashes in
//!   place. With `items <= slab capacity <= index capacity / 2` the reallocating branch is
//!   unreachable, and the low load factor (< 44 % of buckets) makes tombstones, hence in-place
//!   rehashes, rare (`index_never_reallocates_under_churn` checks it).
//! - The index stores 4-byte slab positions instead of whole entries, so probing touches small,
//!   dense buckets and the slot itself is read once, on the key comparison.
//! - The slab gives flows stable ids ([`FlowId`]) and lets aging and eviction walk slab
//!   positions with a clock hand: bounded work per call, no iteration over the hash table, and
//!   no stop-the-world sweep.
//! - A slot is 56 bytes (key 16 + entry 40), within a cache line. Free slots are an enum variant whose tag lives in
//!   the unused values of [`FlowState`] (a niche), so "occupied" costs no extra byte, and the
//!   free list is threaded through the free slots themselves.

use hashbrown::HashTable;

use super::key::{FlowKey, TableKey};
use super::tcp::{FlowState, Tick, TimeoutTooLong, Timeouts, TIMEOUT_CLASSES, UNASSURED_CLASS};

/// Index of a flow's slot. Stable while the flow lives; reused after it is removed.
pub type FlowId = u32;

/// What the data path keeps per flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// Backend IPv4 address, host order.
    pub backend_addr: u32,
    /// Backend port.
    pub backend_port: u16,
    /// Connection state.
    pub state: FlowState,
    /// Data-path bits: [`FlowEntry::ASSURED`].
    pub flags: u8,
    /// Endpoint index, valid only while `generation` is current.
    pub endpoint: u32,
    /// Endpoint generation the flow was pinned under.
    pub generation: u32,
    /// When the flow was created.
    pub created: Tick,
    /// When the flow last saw a packet; ages are measured from here.
    pub last_seen: Tick,
    /// The client's SYN sequence number: tells a SYN retransmission from a new connection.
    pub client_isn: u32,
    /// The sequence number the backend expects next from the client, as
    /// its acknowledgements say (RCV.NXT once it has acknowledged all it
    /// received): what a RST to the backend must carry to be accepted
    /// (RFC 5961; connection recycling). Learnt from the backend's segments
    /// so that the client's, the fast path's, pay nothing for it.
    pub client_next: u32,
    /// The sequence number the client expects next from the backend: the
    /// end of the backend's furthest segment.
    pub backend_next: u32,
    /// The client's next hop (`Generation::route_hop`), learnt by a reply
    /// and valid while `generation` is current: replies on the fast path
    /// leave through it without a route scan. `NO_HOP` until known.
    pub client_hop: u32,
}

/// Moves `next` forward to `end` if `end` is later in sequence space (a
/// retransmission or a reordered segment never moves it back).
#[inline(always)]
pub fn advance_seq(next: &mut u32, end: u32) {
    if end.wrapping_sub(*next) as i32 > 0 {
        *next = end;
    }
}

// Key and entry stay within one 64-byte cache line.
const _: () = assert!(core::mem::size_of::<FlowEntry>() <= 40);

impl FlowEntry {
    /// `flags` bit: the flow is protected from eviction (conntrack's
    /// "assured"): a TCP handshake completed through sluice (the client's
    /// ACK after the backend's SYN-ACK), or the backend answered an
    /// established flow, or a UDP flow saw a reply. Only such flows get the
    /// long established timeout, and a full table never evicts them for a
    /// new flow: a flood of SYNs or bare ACKs from spoofed sources, which
    /// never completes a handshake, cannot push a real connection out.
    pub const ASSURED: u8 = 1;

    /// Whether the flow is protected (see [`FlowEntry::ASSURED`]).
    #[inline(always)]
    pub fn is_assured(&self) -> bool {
        self.flags & Self::ASSURED != 0
    }

    /// Index of this entry's timeout in [`Timeouts::by_class`]: its state,
    /// except that an established TCP flow not yet assured (picked up
    /// mid-stream, no reply seen) has the short `unassured` timeout.
    #[inline(always)]
    pub fn timeout_class(&self) -> usize {
        if self.state == FlowState::Established && !self.is_assured() {
            UNASSURED_CLASS
        } else {
            self.state as usize
        }
    }

    /// A fresh entry created and last seen at `now`, with no data-path flags.
    pub fn new(backend_addr: u32, backend_port: u16, state: FlowState, now: Tick) -> Self {
        FlowEntry {
            backend_addr,
            backend_port,
            state,
            flags: 0,
            endpoint: 0,
            generation: 0,
            created: now,
            last_seen: now,
            client_isn: 0,
            client_next: 0,
            backend_next: 0,
            client_hop: crate::service::NO_HOP,
        }
    }

    /// Idle longer than its state's timeout at `now`.
    ///
    /// The age is read as `i32` so that the comparison survives the clock's wrap, and an entry
    /// stamped slightly in the future (a clock read earlier than `last_seen`) counts as fresh.
    #[inline(always)]
    pub fn is_expired(&self, now: Tick, timeouts: &Timeouts) -> bool {
        self.idle_ms(now) > self.timeout(timeouts) as i32
    }

    /// How long (ms) this entry may stay idle: its state's timeout, or the
    /// `unassured` one (see [`FlowEntry::timeout_class`]).
    #[inline]
    pub fn timeout(&self, timeouts: &Timeouts) -> u32 {
        if self.timeout_class() == UNASSURED_CLASS {
            timeouts.unassured
        } else {
            self.state.timeout(timeouts)
        }
    }

    /// Milliseconds since the flow last saw a packet, negative if `now`
    /// lags `last_seen` (timeouts stay below 2^31 so the comparison holds
    /// across a clock wrap).
    #[inline(always)]
    pub fn idle_ms(&self, now: Tick) -> i32 {
        now.wrapping_sub(self.last_seen) as i32
    }
}

/// Why [`FlowTable::insert`] had to evict a flow to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictReason {
    /// The victim was idle past its timeout.
    Expired,
    /// The victim was `Closed` or `TimeWait`.
    Closed,
    /// No expired or closed flow in the scan window: the least recently
    /// seen of its flows that were not assured went.
    Unassured,
}

/// Result of a successful [`FlowTable::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted<K = FlowKey> {
    /// The new flow's id.
    pub id: FlowId,
    /// Set when the table was full and a flow was evicted to make room.
    pub evicted: Option<EvictReason>,
    /// The evicted flow (its backend's counters must forget it).
    pub victim: Option<(K, FlowEntry)>,
}

/// A table that could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowTableError {
    /// Capacity 0.
    #[error(
        "flow table capacity is 0; it must hold at least one flow (configure a positive size)"
    )]
    ZeroCapacity,
    /// Capacity beyond what `u32` flow ids address.
    #[error(
        "flow table capacity {0} exceeds the maximum of {max} flows per worker; \
         spread flows over more workers",
        max = MAX_CAPACITY
    )]
    CapacityTooLarge(usize),
    /// A timeout the wrapping clock cannot represent.
    #[error(transparent)]
    Timeout(#[from] TimeoutTooLong),
}

/// Largest capacity of one table: ids are `u32` and `u32::MAX` ends the free list; 2^31 also
/// keeps the index's doubled capacity within `usize` on 32-bit hosts.
pub const MAX_CAPACITY: usize = 1 << 31;

/// How many slots a full-table insert examines to find a victim. Every new
/// flow pays for it once the table is full (a SYN flood makes that every
/// packet), so it is kept small, as conntrack's early drop is
/// (`NF_CT_EVICTION_RANGE`, 8): an expired, closed or unassured flow is
/// usually among 8 consecutive slots, and otherwise the new flow goes
/// untracked rather than cost a live connection its entry.
pub const EVICTION_SCAN: usize = 8;

const FREE_END: u32 = u32::MAX;

enum Slot<K> {
    Free { next_free: u32 },
    Used { key: K, entry: FlowEntry },
}

const _: () = assert!(core::mem::size_of::<Slot<FlowKey>>() <= 56);

/// One worker's flow table. Not shared between cores; see the module docs for the layout.
pub struct FlowTable<K: TableKey = FlowKey> {
    slots: Box<[Slot<K>]>,
    index: HashTable<u32>,
    free_head: u32,
    len: usize,
    /// Next slab position that aging and eviction examine.
    hand: usize,
    timeouts: Timeouts,
    /// `timeouts` by [`FlowEntry::timeout_class`] (eviction reads it per
    /// examined slot).
    limits: [u32; TIMEOUT_CLASSES],
    seed: u64,
    /// Direct-mapped hints, hash -> slab id, written on insert and never
    /// trusted: a hint counts only if the slot it names holds the key.
    /// hashbrown's API gives no address to prefetch, so a batch lookup
    /// through it is a chain of three dependent cache misses per packet
    /// (control group, index, slot) that the CPU cannot overlap across
    /// packets. Reading every packet's hint, then every hinted slot, in two
    /// tight loops lets those misses overlap; only hint misses (collisions,
    /// evictions) go through hashbrown.
    hints: Box<[u32]>,
    hint_mask: usize,
}

#[inline(always)]
fn slot_hash<K: TableKey>(slots: &[Slot<K>], id: u32, seed: u64) -> u64 {
    match slots.get(id as usize) {
        Some(Slot::Used { key, .. }) => key.table_hash(seed),
        // The index holds only used slots; a constant keeps this total without a panic.
        _ => 0,
    }
}

impl<K: TableKey> FlowTable<K> {
    /// Builds a table for `capacity` flows, allocating everything up front.
    ///
    /// `seed` should be random per table so that clients cannot aim collisions at a worker.
    ///
    /// # Panics
    /// If `capacity` is 0 or above [`MAX_CAPACITY`], or a timeout exceeds
    /// [`super::tcp::MAX_TIMEOUT_MS`]; use [`FlowTable::try_new`] for configuration input.
    pub fn new(capacity: usize, timeouts: Timeouts, seed: u64) -> Self {
        match Self::try_new(capacity, timeouts, seed) {
            Ok(table) => table,
            Err(e) => panic!("{e}"),
        }
    }

    /// Builds a table for `capacity` flows, or says why the parameters cannot work.
    pub fn try_new(capacity: usize, timeouts: Timeouts, seed: u64) -> Result<Self, FlowTableError> {
        if capacity == 0 {
            return Err(FlowTableError::ZeroCapacity);
        }
        if capacity > MAX_CAPACITY {
            return Err(FlowTableError::CapacityTooLarge(capacity));
        }
        timeouts.validate()?;
        let slots = (0..capacity)
            .map(|i| Slot::Free {
                next_free: if i + 1 == capacity {
                    FREE_END
                } else {
                    i as u32 + 1
                },
            })
            .collect();
        let hints = capacity.next_power_of_two().max(64);
        Ok(FlowTable {
            slots,
            index: HashTable::with_capacity(2 * capacity + 2),
            free_head: 0,
            len: 0,
            hand: 0,
            limits: timeouts.by_class(),
            timeouts,
            seed,
            hints: vec![FREE_END; hints].into_boxed_slice(),
            hint_mask: hints - 1,
        })
    }

    /// The key's hash under this table's seed; pass it to [`lookup`](Self::lookup) and
    /// [`insert`](Self::insert) so a miss followed by an insert hashes once.
    #[inline(always)]
    pub fn hash(&self, key: &K) -> u64 {
        key.table_hash(self.seed)
    }

    /// The live flow with this key, if any, through hashbrown alone.
    #[inline]
    fn lookup_index(&self, key: &K, hash: u64) -> Option<FlowId> {
        self.index.find(hash, |&id| self.holds(id, key)).copied()
    }

    /// Whether slot `id` holds the live flow `key` (the one key comparison
    /// every lookup path ends in).
    #[inline(always)]
    fn holds(&self, id: FlowId, key: &K) -> bool {
        matches!(self.slots.get(id as usize), Some(Slot::Used { key: k, .. }) if k == key)
    }

    /// The live flow with this key, if any: through the hint array first
    /// (one load and one key comparison when the hint is right, nearly
    /// always while the table is below capacity), hashbrown only when it is
    /// not.
    #[inline(always)]
    pub fn lookup(&self, key: &K, hash: u64) -> Option<FlowId> {
        self.hint_probe(key, hash)
            .or_else(|| self.lookup_index(key, hash))
    }

    /// The hinted slot for `hash` if it holds `key`; `None` says nothing
    /// (the flow may still be in the index). Reading the hint and the slot is
    /// what a batch does first for every packet so their cache misses
    /// overlap (see `hints`).
    #[inline(always)]
    fn hint_probe(&self, key: &K, hash: u64) -> Option<FlowId> {
        let id = *self.hints.get(hash as usize & self.hint_mask)?;
        self.holds(id, key).then_some(id)
    }

    /// Looks up a batch of keys (`hashes[i]` being `keys[i]`'s hash) into
    /// `out`, which must be as long as `keys`. Same answers as
    /// [`lookup`](Self::lookup) one by one; faster on large tables because
    /// the memory accesses of different keys overlap (see `hints`).
    pub fn lookup_batch(&self, keys: &[K], hashes: &[u64], out: &mut [Option<FlowId>]) {
        let n = keys.len().min(hashes.len()).min(out.len());
        // Loop 1: every hint (independent loads).
        for i in 0..n {
            out[i] = Some(self.hints[hashes[i] as usize & self.hint_mask]);
        }
        // Loop 2: every hinted slot (independent loads); keep confirmed ones.
        for i in 0..n {
            out[i] = out[i].filter(|&id| self.holds(id, &keys[i]));
        }
        // Loop 3: the rest through hashbrown.
        for i in 0..n {
            if out[i].is_none() {
                out[i] = self.lookup_index(&keys[i], hashes[i]);
            }
        }
    }

    /// Key and entry of `id` if it is a live flow; the non-panicking form of
    /// [`key`](Self::key) and [`entry`](Self::entry).
    #[inline]
    pub fn get(&self, id: FlowId) -> Option<(&K, &FlowEntry)> {
        match self.slots.get(id as usize) {
            Some(Slot::Used { key, entry }) => Some((key, entry)),
            _ => None,
        }
    }

    /// The key of a live flow.
    ///
    /// # Panics
    /// If `id` is not a live flow (a stale or invented id is a caller bug).
    #[inline]
    pub fn key(&self, id: FlowId) -> &K {
        match self.get(id) {
            Some((key, _)) => key,
            None => dead_id(id),
        }
    }

    /// The entry of a live flow.
    ///
    /// # Panics
    /// If `id` is not a live flow.
    #[inline]
    pub fn entry(&self, id: FlowId) -> &FlowEntry {
        match self.get(id) {
            Some((_, entry)) => entry,
            None => dead_id(id),
        }
    }

    /// The entry of a live flow, for state and `last_seen` updates.
    ///
    /// # Panics
    /// If `id` is not a live flow.
    #[inline]
    pub fn entry_mut(&mut self, id: FlowId) -> &mut FlowEntry {
        match self.slots.get_mut(id as usize) {
            Some(Slot::Used { entry, .. }) => entry,
            _ => dead_id(id),
        }
    }

    /// Inserts a key that [`lookup`](Self::lookup) just missed; `hash` is
    /// [`hash`](Self::hash) of it. `entry` is stored as given (the caller stamps `created` and
    /// `last_seen`); `now` only judges eviction candidates.
    ///
    /// When full, it evicts the first expired or closed flow found by a scan of at most
    /// [`EVICTION_SCAN`] slots from the clock hand, else the least recently seen of the
    /// scanned flows that are not assured. If every scanned flow is live and assured, nothing
    /// is evicted and `None` is returned: the caller forwards the packet untracked. Inserting
    /// a key that is already present is a caller bug (checked in debug builds): the table
    /// would hold it twice.
    pub fn insert(
        &mut self,
        key: K,
        hash: u64,
        entry: FlowEntry,
        now: Tick,
    ) -> Option<Inserted<K>> {
        debug_assert_eq!(
            hash,
            self.hash(&key),
            "insert with a hash of another key or seed"
        );
        debug_assert!(
            self.lookup(&key, hash).is_none(),
            "insert of a key already present"
        );
        let (id, evicted, victim) = match self.pop_free() {
            Some(id) => (id, None, None),
            None => {
                let (id, reason) = self.evict_one(now)?;
                let victim = match &self.slots[id as usize] {
                    Slot::Used { key, entry } => Some((*key, *entry)),
                    Slot::Free { .. } => None,
                };
                (id, Some(reason), victim)
            }
        };
        self.slots[id as usize] = Slot::Used { key, entry };
        self.hints[hash as usize & self.hint_mask] = id;
        let (slots, seed) = (&self.slots, self.seed);
        // The hasher runs only on an in-place rehash (see module docs), never to grow.
        self.index
            .insert_unique(hash, id, |&i| slot_hash(slots, i, seed));
        self.len += 1;
        Some(Inserted {
            id,
            evicted,
            victim,
        })
    }

    /// Removes a flow. Removing an id that is not live does nothing.
    pub fn remove(&mut self, id: FlowId) {
        if self.unlink(id) {
            self.slots[id as usize] = Slot::Free {
                next_free: self.free_head,
            };
            self.free_head = id;
        }
    }

    /// Whether a live flow is idle past its state's timeout at `now` (false for ids that are
    /// not live).
    #[inline]
    pub fn is_expired(&self, id: FlowId, now: Tick) -> bool {
        self.get(id)
            .is_some_and(|(_, e)| e.is_expired(now, &self.timeouts))
    }

    /// Incremental aging: examines at most `budget` slots from the clock hand, removes the
    /// expired flows among them and returns how many it removed. Meant to be called with a
    /// small budget between bursts, so a full pass over the slab is spread over many calls.
    pub fn expire(&mut self, now: Tick, budget: usize) -> usize {
        self.expire_each(now, budget, |_, _| {})
    }

    /// [`FlowTable::expire`], calling `gone` with each expired flow before it
    /// is removed (per-backend flow counts).
    pub fn expire_each(
        &mut self,
        now: Tick,
        budget: usize,
        mut gone: impl FnMut(&K, &FlowEntry),
    ) -> usize {
        if self.len == 0 {
            return 0;
        }
        let capacity = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(capacity) {
            let id = self.hand as u32;
            self.advance_hand();
            let expired = match &self.slots[id as usize] {
                Slot::Used { key, entry } if entry.is_expired(now, &self.timeouts) => {
                    gone(key, entry);
                    true
                }
                _ => false,
            };
            if expired {
                self.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// Number of live flows.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Maximum number of live flows.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// No live flows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The timeouts this table ages flows with.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Replaces the timeouts (a configuration reload); live flows are judged by the new values
    /// from the next check on.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), TimeoutTooLong> {
        timeouts.validate()?;
        self.limits = timeouts.by_class();
        self.timeouts = timeouts;
        Ok(())
    }

    /// Live flows in slab order, for control-plane dumps (walks the whole slab; not for the hot
    /// path).
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &K, &FlowEntry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Used { key, entry } => Some((i as FlowId, key, entry)),
                Slot::Free { .. } => None,
            })
    }

    /// Bytes allocated by the slab and the index (for memory accounting).
    pub fn allocated_bytes(&self) -> usize {
        core::mem::size_of_val(&*self.slots)
            + self.index.allocation_size()
            + core::mem::size_of_val(&*self.hints)
    }

    /// Size of one slab slot in bytes.
    pub const fn slot_bytes() -> usize {
        core::mem::size_of::<Slot<K>>()
    }

    #[inline(always)]
    fn advance_hand(&mut self) {
        self.hand += 1;
        if self.hand == self.slots.len() {
            self.hand = 0;
        }
    }

    #[inline]
    fn pop_free(&mut self) -> Option<FlowId> {
        let id = self.free_head;
        match self.slots.get(id as usize) {
            Some(Slot::Free { next_free }) => {
                self.free_head = *next_free;
                Some(id)
            }
            _ => None,
        }
    }

    /// Drops a live flow from the index and the count, leaving its slot for the caller to
    /// free or reuse. False if `id` was not live.
    fn unlink(&mut self, id: FlowId) -> bool {
        let Some((key, _)) = self.get(id) else {
            return false;
        };
        let hash = key.table_hash(self.seed);
        match self.index.find_entry(hash, |&i| i == id) {
            Ok(found) => {
                found.remove();
            }
            Err(_) => debug_assert!(false, "live flow {id} missing from the index"),
        }
        self.len -= 1;
        true
    }

    /// Frees one slot of a full table and returns it (unlinked, to be
    /// overwritten), or `None` if every examined flow is live and assured.
    ///
    /// Runs for every new flow once the table is full, so each examined
    /// slot costs a handful of instructions: the entry's timeout comes from
    /// a table indexed by its timeout class, not from a match.
    fn evict_one(&mut self, now: Tick) -> Option<(FlowId, EvictReason)> {
        let n = self.slots.len();
        let limits = self.limits;
        let mut oldest: Option<(usize, i32)> = None;
        let mut victim = None;
        let mut id = self.hand;
        for _ in 0..EVICTION_SCAN.min(n) {
            let at = id;
            id += 1;
            if id >= n {
                id = 0;
            }
            let Some(Slot::Used { entry, .. }) = self.slots.get(at) else {
                continue;
            };
            let age = entry.idle_ms(now);
            let limit = limits.get(entry.timeout_class()).copied().unwrap_or(0) as i32;
            if age > limit {
                victim = Some((at, EvictReason::Expired));
                break;
            }
            if entry.state.is_closed() {
                victim = Some((at, EvictReason::Closed));
                break;
            }
            if entry.is_assured() {
                continue;
            }
            if !oldest.is_some_and(|(_, a)| age <= a) {
                oldest = Some((at, age));
            }
        }
        self.hand = id;
        let (id, reason) = match (victim, oldest) {
            (Some(v), _) => v,
            (None, Some((id, _))) => (id, EvictReason::Unassured),
            (None, None) => return None,
        };
        let id = id as FlowId;
        let unlinked = self.unlink(id);
        debug_assert!(unlinked, "eviction victim {id} was not live");
        Some((id, reason))
    }
}

#[cold]
#[inline(never)]
fn dead_id(id: FlowId) -> ! {
    panic!("flow id {id} is not a live flow in this table")
}

impl<K: TableKey + core::fmt::Debug> core::fmt::Debug for FlowTable<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .field("hand", &self.hand)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::ip_proto;

    const SEED: u64 = 0x5eed;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            client_addr: 0x0a00_0000 | i,
            vip_addr: 0xc612_0064,
            client_port: (i % 50_000) as u16 + 1024,
            vip_port: 80,
            proto: ip_proto::TCP,
        }
    }

    /// A real connection: established and assured.
    fn established(now: Tick) -> FlowEntry {
        FlowEntry {
            flags: FlowEntry::ASSURED,
            ..picked_up(now)
        }
    }

    /// An established flow picked up mid-stream, not answered yet.
    fn picked_up(now: Tick) -> FlowEntry {
        FlowEntry::new(0xc0a8_0001, 8080, FlowState::Established, now)
    }

    fn table(capacity: usize) -> FlowTable {
        FlowTable::new(capacity, Timeouts::default(), SEED)
    }

    fn add(t: &mut FlowTable, i: u32, entry: FlowEntry, now: Tick) -> Inserted {
        let k = key(i);
        let h = t.hash(&k);
        assert_eq!(t.lookup(&k, h), None);
        t.insert(k, h, entry, now).expect("room in the table")
    }

    fn find(t: &FlowTable, i: u32) -> Option<FlowId> {
        let k = key(i);
        t.lookup(&k, t.hash(&k))
    }

    #[test]
    fn slot_and_entry_are_small() {
        assert_eq!(FlowTable::<FlowKey>::slot_bytes(), 56);
        assert_eq!(core::mem::size_of::<FlowEntry>(), 40);
    }

    #[test]
    fn try_new_rejects_bad_parameters_with_explanations() {
        let e = FlowTable::<FlowKey>::try_new(0, Timeouts::default(), 0).unwrap_err();
        assert_eq!(e, FlowTableError::ZeroCapacity);
        assert!(e.to_string().contains("at least one"));
        let e = FlowTable::<FlowKey>::try_new(MAX_CAPACITY + 1, Timeouts::default(), 0);
        assert!(matches!(e, Err(FlowTableError::CapacityTooLarge(_))));
        let bad = Timeouts {
            udp: u32::MAX,
            ..Timeouts::default()
        };
        let e = FlowTable::<FlowKey>::try_new(4, bad, 0).unwrap_err();
        assert!(e.to_string().contains("udp"), "{e}");
    }

    #[test]
    #[should_panic(expected = "capacity is 0")]
    fn new_panics_on_zero_capacity() {
        let _ = table(0);
    }

    #[test]
    fn new_table_is_empty_and_preallocated() {
        let t = table(1000);
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.capacity(), 1000);
        assert!(t.index.capacity() >= 2 * 1000 + 2);
        assert!(t.allocated_bytes() >= 1000 * 44);
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.timeouts(), &Timeouts::default());
    }

    #[test]
    fn hash_is_the_seeded_table_hash() {
        let t = table(4);
        let other = FlowTable::<FlowKey>::new(4, Timeouts::default(), SEED + 1);
        let k = key(1);
        assert_eq!(t.hash(&k), k.table_hash(SEED));
        assert_ne!(t.hash(&k), other.hash(&k));
    }

    #[test]
    fn insert_then_lookup_key_entry_get() {
        let mut t = table(8);
        let ins = add(&mut t, 1, established(5), 5);
        assert_eq!(ins.evicted, None);
        assert_eq!(find(&t, 1), Some(ins.id));
        assert_eq!(t.key(ins.id), &key(1));
        assert_eq!(t.entry(ins.id), &established(5));
        assert_eq!(t.get(ins.id), Some((&key(1), &established(5))));
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
        assert_eq!(find(&t, 2), None);
    }

    #[test]
    fn lookup_misses_keys_that_differ_in_one_field() {
        let mut t = table(8);
        add(&mut t, 1, established(0), 0);
        let k = key(1);
        for other in [
            FlowKey {
                proto: ip_proto::UDP,
                ..k
            },
            FlowKey { vip_port: 443, ..k },
            FlowKey {
                client_port: k.client_port + 1,
                ..k
            },
        ] {
            assert_eq!(t.lookup(&other, t.hash(&other)), None);
        }
    }

    #[test]
    fn entry_mut_updates_in_place() {
        let mut t = table(8);
        let id = add(&mut t, 1, established(0), 0).id;
        let e = t.entry_mut(id);
        e.last_seen = 77;
        e.state = e.state.next_tcp(
            crate::flow::Direction::Original,
            crate::flow::tcp_flags::RST,
        );
        assert_eq!(t.entry(id).last_seen, 77);
        assert_eq!(t.entry(id).state, FlowState::Closed);
    }

    #[test]
    fn remove_frees_the_slot_for_reuse_and_ignores_dead_ids() {
        let mut t = table(2);
        let a = add(&mut t, 1, established(0), 0).id;
        let b = add(&mut t, 2, established(0), 0).id;
        t.remove(a);
        assert_eq!(find(&t, 1), None);
        assert_eq!(find(&t, 2), Some(b));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(a), None);
        t.remove(a);
        t.remove(12345);
        assert_eq!(t.len(), 1);
        let c = add(&mut t, 3, established(0), 0);
        assert_eq!((c.id, c.evicted), (a, None));
        assert_eq!(find(&t, 3), Some(a));
    }

    #[test]
    #[should_panic(expected = "not a live flow")]
    fn entry_of_a_removed_flow_panics() {
        let mut t = table(2);
        let id = add(&mut t, 1, established(0), 0).id;
        t.remove(id);
        let _ = t.entry(id);
    }

    #[test]
    #[should_panic(expected = "not a live flow")]
    fn key_of_an_out_of_range_id_panics() {
        let _ = table(2).key(2);
    }

    #[test]
    fn is_expired_is_strictly_after_the_timeout() {
        let mut t = table(4);
        let timeout = Timeouts::default().established;
        let id = add(&mut t, 1, established(1000), 1000).id;
        assert!(!t.is_expired(id, 1000));
        assert!(!t.is_expired(id, 1000 + timeout));
        assert!(t.is_expired(id, 1000 + timeout + 1));
        // A clock read that lags last_seen is not an enormous age.
        assert!(!t.is_expired(id, 999));
        assert!(!t.is_expired(u32::MAX - 3, 0));
    }

    #[test]
    fn is_expired_survives_clock_wrap() {
        let mut t = table(4);
        let closed = Timeouts::default().closed;
        let start = u32::MAX - 100;
        let entry = FlowEntry::new(1, 1, FlowState::Closed, start);
        let id = add(&mut t, 1, entry, start).id;
        assert!(!t.is_expired(id, start.wrapping_add(closed)));
        assert!(t.is_expired(id, start.wrapping_add(closed + 1)));
        assert!(!t.is_expired(id, 5)); // just after the wrap
    }

    #[test]
    fn expire_removes_only_expired_flows_within_budget() {
        let mut t = table(100);
        let closed = Timeouts::default().closed;
        for i in 0..100 {
            let state = if i % 2 == 0 {
                FlowState::Closed
            } else {
                FlowState::Established
            };
            add(&mut t, i, FlowEntry::new(1, 1, state, 0), 0);
        }
        let now = closed + 1;
        assert_eq!(t.expire(now, 10), 5);
        assert_eq!(t.len(), 95);
        let mut removed = 5;
        for _ in 0..20 {
            removed += t.expire(now, 10);
        }
        assert_eq!(removed, 50);
        assert_eq!(t.len(), 50);
        assert!(t.iter().all(|(_, _, e)| e.state == FlowState::Established));
        // Nothing left to expire, a huge budget is capped at one pass.
        assert_eq!(t.expire(now, usize::MAX), 0);
        assert_eq!(t.expire(now, 0), 0);
    }

    #[test]
    fn full_insert_prefers_expired_then_closed_then_oldest() {
        let cap = EVICTION_SCAN;
        let t_out = Timeouts::default();
        // Expired: one flow long idle among fresh ones.
        let mut t = table(cap);
        for i in 0..cap as u32 {
            let seen = if i == 3 { 0 } else { t_out.established };
            add(&mut t, i, established(seen), seen);
        }
        let now = t_out.established + 1;
        let ins = add(&mut t, 1000, established(now), now);
        assert_eq!(ins.evicted, Some(EvictReason::Expired));
        assert_eq!(find(&t, 3), None);
        assert_eq!(t.len(), cap);

        // Closed: a TimeWait flow goes before any live one.
        let mut t = table(cap);
        for i in 0..cap as u32 {
            let state = if i == 7 {
                FlowState::TimeWait
            } else {
                FlowState::Established
            };
            add(&mut t, i, FlowEntry::new(1, 1, state, 10), 10);
        }
        let ins = add(&mut t, 1000, established(11), 11);
        assert_eq!(ins.evicted, Some(EvictReason::Closed));
        assert_eq!(find(&t, 7), None);

        // Unassured: all live, the least recently seen unassured one goes.
        let mut t = table(cap);
        for i in 0..cap as u32 {
            add(&mut t, i, picked_up(100 + i), 100 + i);
        }
        t.entry_mut(find(&t, 5).unwrap()).last_seen = 50;
        let ins = add(&mut t, 1000, established(200), 200);
        assert_eq!(ins.evicted, Some(EvictReason::Unassured));
        assert_eq!(find(&t, 5), None);
        assert_eq!(find(&t, 1000), Some(ins.id));
        assert_eq!(t.len(), cap);
    }

    #[test]
    fn assured_flows_are_never_evicted_for_a_new_one() {
        let cap = 4 * EVICTION_SCAN;
        let mut t = table(cap);
        // Every other flow assured and idle for long (but not expired).
        for i in 0..cap as u32 {
            let e = if i % 2 == 0 {
                established(0)
            } else {
                picked_up(1000)
            };
            add(&mut t, i, e, 1000);
        }
        let now = 20_000;
        // A flood of new flows: each takes an unassured slot while there are
        // some, never an assured one, however old.
        for j in 0..(cap as u32) * 10 {
            let k = key(100_000 + j);
            let h = t.hash(&k);
            if let Some(ins) = t.insert(k, h, picked_up(now), now) {
                let (_, victim) = ins.victim.expect("a full table evicts");
                assert!(!victim.is_assured(), "evicted an assured flow");
                assert_eq!(ins.evicted, Some(EvictReason::Unassured));
            }
        }
        for i in (0..cap as u32).step_by(2) {
            assert!(find(&t, i).is_some(), "assured flow {i} evicted");
        }
        assert_eq!(t.len(), cap);
    }

    #[test]
    fn a_table_full_of_live_assured_flows_refuses_new_ones() {
        let cap = EVICTION_SCAN;
        let mut t = table(cap);
        for i in 0..cap as u32 {
            add(&mut t, i, established(0), 0);
        }
        let k = key(999);
        let h = t.hash(&k);
        assert_eq!(t.insert(k, h, picked_up(5), 5), None);
        assert_eq!(t.len(), cap);
        assert_eq!(find(&t, 999), None);
        // Once one expires, it is taken.
        let late = Timeouts::default().established + 1;
        let ins = t.insert(k, h, picked_up(late), late).unwrap();
        assert_eq!(ins.evicted, Some(EvictReason::Expired));
    }

    #[test]
    fn unassured_established_flows_have_the_short_timeout() {
        let mut t = table(4);
        let to = Timeouts::default();
        let pickup = add(&mut t, 1, picked_up(0), 0).id;
        let real = add(&mut t, 2, established(0), 0).id;
        assert!(!t.is_expired(pickup, to.unassured));
        assert!(t.is_expired(pickup, to.unassured + 1));
        assert!(!t.is_expired(real, to.unassured + 1));
        assert!(to.unassured < to.established);
        assert_eq!(picked_up(0).timeout(&to), to.unassured);
        assert_eq!(established(0).timeout(&to), to.established);
    }

    #[test]
    fn insert_into_a_full_table_of_unassured_flows_always_succeeds() {
        let mut t = table(64);
        for i in 0..10_000u32 {
            let ins = add(&mut t, i, picked_up(i), i);
            assert_eq!(ins.evicted.is_some(), i >= 64);
            assert_eq!(find(&t, i), Some(ins.id));
            assert!(t.len() <= 64);
        }
        assert_eq!(t.len(), 64);
    }

    #[test]
    fn capacity_one_table_evicts_its_only_flow() {
        let mut t = table(1);
        add(&mut t, 1, picked_up(0), 0);
        let ins = add(&mut t, 2, picked_up(1), 1);
        assert_eq!(ins.evicted, Some(EvictReason::Unassured));
        assert_eq!((find(&t, 1), find(&t, 2)), (None, Some(0)));
    }

    #[test]
    fn index_never_reallocates_under_churn() {
        let cap = 4096;
        let mut t = table(cap);
        let bytes = t.allocated_bytes();
        for round in 0..50u32 {
            for i in 0..cap as u32 {
                add(&mut t, round * cap as u32 + i, picked_up(round), round);
            }
            assert_eq!(t.len(), cap);
            // Remove in an order unrelated to insertion to scatter tombstones.
            let ids: Vec<FlowId> = t
                .iter()
                .map(|(id, _, _)| id)
                .filter(|id| id % 3 != 0)
                .collect();
            for id in ids {
                t.remove(id);
            }
        }
        assert_eq!(t.allocated_bytes(), bytes);
    }

    #[test]
    fn iter_lists_exactly_the_live_flows() {
        let mut t = table(16);
        let ids: Vec<FlowId> = (0..10)
            .map(|i| add(&mut t, i, established(i), i).id)
            .collect();
        t.remove(ids[4]);
        let mut seen: Vec<(FlowId, FlowKey)> = t.iter().map(|(id, k, _)| (id, *k)).collect();
        seen.sort_by_key(|&(id, _)| id);
        let mut expected: Vec<(FlowId, FlowKey)> = (0..10u32)
            .filter(|&i| i != 4)
            .map(|i| (ids[i as usize], key(i)))
            .collect();
        expected.sort_by_key(|&(id, _)| id);
        assert_eq!(seen, expected);
    }

    #[test]
    fn set_timeouts_validates_and_applies() {
        let mut t = table(4);
        let id = add(&mut t, 1, established(0), 0).id;
        assert!(t
            .set_timeouts(Timeouts {
                established: u32::MAX,
                ..Timeouts::default()
            })
            .is_err());
        assert!(!t.is_expired(id, 1000));
        t.set_timeouts(Timeouts {
            established: 10,
            ..Timeouts::default()
        })
        .unwrap();
        assert!(t.is_expired(id, 1000));
    }
}
