//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), as used
//! by Katran and Cilium.
//!
//! The control thread builds a [`MaglevTable`] per service off the hot path;
//! workers only call [`MaglevTable::lookup`]. Every sluice instance given the
//! same endpoint set must build a bit-identical table (DESIGN.md, "Flows and
//! consistency"), so everything that decides a slot is a pure function of the
//! endpoints' identities (address and port), their weights, the table size and
//! the per-service seed, never of the order the endpoints were given in.
//!
//! # Stable contract (`MAGLEV_V1`)
//!
//! Changing any of these moves flows between backends on running clusters,
//! so they are frozen by `v1_tables_are_frozen` below:
//! - identity bytes: `[4, a, b, c, d, port_hi, port_lo]` for IPv4 and
//!   `[6, 16 address bytes, port_hi, port_lo]` for IPv6;
//! - `offset = reduce(hash_bytes_v1(identity, hash_words_v1(seed, OFFSET_DOMAIN, 0)), size)`,
//!   `skip = 1 + reduce(hash_bytes_v1(identity, hash_words_v1(seed, SKIP_DOMAIN, 0)), size - 1)`;
//! - fill order: per-round credit (see [`fill_by_rounds`]), backends visited
//!   in canonical order (sorted by `(addr, port)`, `IpAddr`'s `Ord`);
//! - lookup: `slot = ((flow_hash >> 32) as u32) % size`, computed with
//!   Lemire's fastmod, so no division runs per packet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::hash::{hash_bytes_v1, hash_words_v1, reduce};

/// The table size Katran and Cilium default to: prime, and large enough that
/// a service with up to ~650 backends stays within 1% of its weight shares.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Primes offered as table sizes (Cilium's list plus 65537).
pub const TABLE_SIZES: &[u32] = &[
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071,
];

/// Slot value of a table in which no backend has a positive weight.
pub const NO_BACKEND: u16 = u16::MAX;

/// Largest number of backends a table can index: slots are `u16` and
/// [`NO_BACKEND`] is reserved.
pub const MAX_BACKENDS: usize = 65534;

/// Smallest accepted table size; below it, weights cannot be represented.
pub const MIN_TABLE_SIZE: u32 = 7;

/// Largest accepted table size (16 Mi slots of `u16`, 32 MiB per service).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

// Domain separators so that offset and skip come from independent hashes of
// the same identity, even for the same service seed.
const OFFSET_DOMAIN: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_DOMAIN: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const DIGEST_SEED: u64 = 0x6d61_676c_6576_6467; // "maglevdg"

// Digest stand-ins for slots that name no identity; any fixed values that
// identity hashes are unlikely to produce will do.
const DIGEST_EMPTY_SLOT: u64 = 0xe3e3_e3e3_e3e3_e3e3;
const DIGEST_UNKNOWN_INDEX: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// One backend (endpoint) of a service as Maglev sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    pub addr: IpAddr,
    pub port: u16,
    /// Relative share of the table; 0 gives no slots (a draining endpoint).
    pub weight: u32,
}

impl MaglevBackend {
    pub const fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        MaglevBackend { addr, port, weight }
    }

    /// The identity Maglev hashes: address and port, never the weight, so a
    /// weight change does not move the backend's permutation.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// Canonical order of identities; ties here are duplicates.
    fn identity_key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

/// Identity bytes, tagged with the address family so an IPv4 address and its
/// IPv4-mapped IPv6 form are different backends.
struct IdentityBytes {
    buf: [u8; 19],
    len: usize,
}

impl IdentityBytes {
    fn of(backend: &MaglevBackend) -> Self {
        let mut buf = [0u8; 19];
        let len = match backend.addr {
            IpAddr::V4(v4) => {
                buf[0] = 4;
                buf[1..5].copy_from_slice(&v4.octets());
                buf[5..7].copy_from_slice(&backend.port.to_be_bytes());
                7
            }
            IpAddr::V6(v6) => {
                buf[0] = 6;
                buf[1..17].copy_from_slice(&v6.octets());
                buf[17..19].copy_from_slice(&backend.port.to_be_bytes());
                19
            }
        };
        IdentityBytes { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Why a Maglev table could not be built. Nothing is built on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error(
        "Maglev table size {0} is not prime: permutations only cover every slot when the \
         size is prime; use one of {TABLE_SIZES:?} (or another prime in [7, 16777216])"
    )]
    NotPrime(u32),
    #[error("Maglev table size {0} is outside [7, 16777216]; use one of {TABLE_SIZES:?}")]
    SizeOutOfRange(u32),
    #[error(
        "{backends} backends with weight > 0 do not fit in a Maglev table of {size} slots; \
         use a table size of at least 100 x backends (one of {TABLE_SIZES:?})"
    )]
    TooManyBackends { backends: usize, size: u32 },
    #[error(
        "{backends} backends given but a Maglev table indexes at most 65534 (slots are u16); \
         split the service"
    )]
    BackendIndexOverflow { backends: usize },
    #[error(
        "backend {endpoint} is listed more than once; each (address, port) may appear once, \
         with one weight"
    )]
    DuplicateBackend { endpoint: SocketAddr },
}

/// Checks that `size` can be a Maglev table size: prime and within
/// [[`MIN_TABLE_SIZE`], [`MAX_TABLE_SIZE`]].
pub fn validate_table_size(size: u32) -> Result<(), MaglevError> {
    if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size) {
        return Err(MaglevError::SizeOutOfRange(size));
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    Ok(())
}

/// Trial division: sizes are at most 2^24, so at most ~2000 odd divisors.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Lemire, Kaser, Kurz, "Faster Remainder by Direct Computation" (2019):
/// with `m = u64::MAX / d + 1` precomputed, `a % d` for any 32-bit `a` is two
/// multiplications. Exact, not an approximation.
#[inline(always)]
fn fastmod_u32(a: u32, m: u64, d: u32) -> u32 {
    let low_bits = m.wrapping_mul(a as u64);
    ((low_bits as u128 * d as u128) >> 64) as u32
}

fn fastmod_constant(d: u32) -> u64 {
    (u64::MAX / d as u64).wrapping_add(1)
}

/// A built Maglev lookup table: `size` slots, each the index (into the
/// backend slice given to [`MaglevTable::build`]) of the backend that owns it.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[u16]>,
    size: u32,
    fastmod_m: u64,
}

/// Permutation positions a backend examines per look-ahead scan.
const LOOKAHEAD: usize = 16;

/// Where one active backend is in its permutation, plus its weight credit.
#[derive(Clone, Copy)]
struct Cursor {
    /// First permutation position not yet examined.
    pos: u32,
    skip: u32,
    /// `skip^-1 mod size`, computed on the first endgame claim; 0 until then
    /// (never a valid inverse).
    skip_inverse: u32,
    weight: u32,
    /// Index into the caller's slice: what the slots store.
    input_index: u16,
    /// `ahead[next..len]`: positions the last scan found free, in permutation
    /// order; the ones before `pos` that are worth a second look.
    next: u8,
    len: u8,
    ahead: [u32; LOOKAHEAD],
    /// Weight accumulated and not yet spent on a slot (round strategy), or
    /// slots placed so far (event strategy).
    credit: u64,
}

impl Cursor {
    fn new(offset: u32, skip: u32, weight: u32, input_index: u16) -> Self {
        Cursor {
            pos: offset,
            skip,
            skip_inverse: 0,
            weight,
            input_index,
            next: 0,
            len: 0,
            ahead: [0; LOOKAHEAD],
            credit: 0,
        }
    }
}

/// Multiplication modulo a table size `d` by Barrett reduction: with
/// `m = floor(2^64 / d)` the quotient estimate `(x * m) >> 64` is short by at
/// most one, so a single subtraction corrects it.
#[derive(Clone, Copy)]
struct MulMod {
    d: u64,
    m: u64,
}

impl MulMod {
    fn new(d: u32) -> Self {
        MulMod {
            d: d as u64,
            m: u64::MAX / d as u64,
        }
    }

    /// `(a * b) mod d` for any `a, b < 2^32`: the estimate is short by at
    /// most one for every 64-bit product.
    #[inline(always)]
    fn mul(self, a: u32, b: u32) -> u32 {
        let x = a as u64 * b as u64;
        let q = ((x as u128 * self.m as u128) >> 64) as u64;
        let r = x - q * self.d;
        // Branch-free "subtract d if r >= d": below d, r - d wraps above r.
        r.min(r.wrapping_sub(self.d)) as u32
    }

    /// Inverse of `a` (nonzero, `d` prime) by Fermat: `a^(d-2)`.
    fn inverse(self, a: u32) -> u32 {
        let mut result = 1u32;
        let mut base = a;
        let mut e = self.d as u32 - 2;
        while e > 0 {
            if e & 1 == 1 {
                result = self.mul(result, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        result
    }
}

/// The table being filled.
///
/// The result is defined by probing: a claim gives the backend the first
/// free slot of its permutation after its previous claim. Three things make
/// that cheap without changing which slot it is:
/// - probes test a bitmap of free slots (8 KiB at 65537 slots, L1-resident),
///   not the 128 KiB of `u16` slots;
/// - a backend examines its permutation [`LOOKAHEAD`] positions at a time,
///   in four interleaved chains and without a branch per position, and
///   keeps the ones found free. Occupancy only grows, so a position found
///   taken stays taken and is never examined again, while one found free is
///   checked again when its turn comes (another backend may have taken it
///   since). The data-dependent "free?" branch, mispredicted about once per
///   claim, now runs once per kept position instead of once per probe;
/// - a claim by probing costs `size / free` probes on average, so the last
///   few hundred slots would cost a large share of the `size * ln(size)`
///   total. Once at most `endgame_at` slots are free, claims search the
///   explicit list of free positions instead: the next free slot of a
///   permutation is the free position `p` fewest steps
///   `(p - pos) * skip^-1 mod size` away (every position fewer steps away is
///   taken), at `free` multiplications per claim.
struct Filling<'a> {
    slots: &'a mut [u16],
    /// Bit `p` set while slot `p` is free; bits past `size` are clear.
    vacant: Vec<u64>,
    size: u32,
    remaining: usize,
    endgame_at: usize,
    /// Free positions, listed on entering the endgame (empty before).
    free: Vec<u32>,
    mulmod: MulMod,
}

impl<'a> Filling<'a> {
    fn new(slots: &'a mut [u16], endgame_at: usize) -> Self {
        let size = slots.len() as u32;
        Filling {
            vacant: vacancy_bitmap(slots.len()),
            remaining: slots.len(),
            endgame_at,
            free: Vec::new(),
            mulmod: MulMod::new(size),
            slots,
            size,
        }
    }

    /// 1 if slot `pos` is free; positions past the bitmap read as taken,
    /// though none is ever asked for.
    #[inline(always)]
    fn free_bit(&self, pos: u32) -> usize {
        let bits = self.vacant.get((pos >> 6) as usize).copied().unwrap_or(0);
        ((bits >> (pos & 63)) & 1) as usize
    }

    #[inline(always)]
    fn add_mod(&self, a: u32, b: u32) -> u32 {
        // Both < size, so the sum wraps at most once; below size, sum - size
        // wraps above sum, so the minimum selects without a branch.
        let sum = a + b;
        sum.min(sum.wrapping_sub(self.size))
    }

    #[inline(always)]
    fn take(&mut self, pos: u32, input_index: u16) -> bool {
        if let Some(bits) = self.vacant.get_mut((pos >> 6) as usize) {
            *bits &= !(1u64 << (pos & 63));
        }
        if let Some(slot) = self.slots.get_mut(pos as usize) {
            *slot = input_index;
        }
        self.remaining -= 1;
        self.remaining == 0
    }

    /// Examines the next [`LOOKAHEAD`] positions of `cursor`'s permutation
    /// and keeps the free ones. Every position is written to the buffer and
    /// the length advances only past free ones, so no branch depends on the
    /// bitmap.
    #[inline(always)]
    fn scan(&self, cursor: &mut Cursor) {
        // Four interleaved chains (positions 4k, 4k+1, 4k+2, 4k+3 of the
        // run) each advance by 4 * skip, so the loop-carried dependency of
        // one modular step is paid once per four probes.
        let skip = cursor.skip;
        let skip_x2 = self.add_mod(skip, skip);
        let skip_x4 = self.add_mod(skip_x2, skip_x2);
        let p0 = cursor.pos;
        let p2 = self.add_mod(p0, skip_x2);
        let mut lanes = [p0, self.add_mod(p0, skip), p2, self.add_mod(p2, skip)];
        // Below wrap_at, p - wrap_at wraps above any slot, so the minimum
        // is the unwrapped sum: a select, never a branch.
        let wrap_at = self.size - skip_x4;
        let mut ahead = [0u32; LOOKAHEAD];
        let mut len = 0usize;
        for _ in 0..LOOKAHEAD / 4 {
            for &pos in &lanes {
                ahead[len % LOOKAHEAD] = pos;
                len += self.free_bit(pos);
            }
            for pos in &mut lanes {
                *pos = (*pos + skip_x4).min(pos.wrapping_sub(wrap_at));
            }
        }
        cursor.ahead = ahead;
        cursor.pos = lanes[0];
        cursor.next = 0;
        cursor.len = len as u8;
    }

    /// Gives `cursor`'s backend the next free slot of its permutation;
    /// returns true once the table is full. Only called while a slot is free.
    #[inline(always)]
    fn claim(&mut self, cursor: &mut Cursor) -> bool {
        if self.remaining <= self.endgame_at {
            return self.claim_from_free_list(cursor);
        }
        loop {
            while cursor.next < cursor.len {
                let pos = cursor.ahead[cursor.next as usize % LOOKAHEAD];
                cursor.next += 1;
                if self.free_bit(pos) != 0 {
                    return self.take(pos, cursor.input_index);
                }
            }
            // A permutation of a prime-sized table visits every slot once
            // per `size` steps, so scanning finds a free slot.
            self.scan(cursor);
        }
    }

    #[cold]
    fn list_free(&mut self) {
        for (word_index, &bits) in self.vacant.iter().enumerate() {
            let mut vacant = bits;
            while vacant != 0 {
                self.free
                    .push((word_index as u32) * 64 + vacant.trailing_zeros());
                vacant &= vacant - 1;
            }
        }
    }

    /// The endgame claim.
    fn claim_from_free_list(&mut self, cursor: &mut Cursor) -> bool {
        if self.free.is_empty() {
            self.list_free();
        }
        // Only this function takes slots from here on, so the list stays
        // exact. Between the first unread look-ahead position and `pos`,
        // only look-ahead positions can still be free: step back to the
        // first of them and let the list search from there.
        if cursor.next < cursor.len {
            cursor.pos = cursor.ahead[cursor.next as usize % LOOKAHEAD];
            cursor.next = cursor.len;
        }
        if cursor.skip_inverse == 0 {
            cursor.skip_inverse = self.mulmod.inverse(cursor.skip);
        }
        let (inverse, mulmod) = (cursor.skip_inverse, self.mulmod);
        // pos + offset is congruent to pos - cursor.pos and never negative;
        // the reduction absorbs the extra `size`, so nothing branches on
        // the order of the two.
        let offset = self.size - cursor.pos;
        // The running minimum changes about ln(free) times per pass, so
        // the branch is nearly always predicted; steps differ for different
        // positions, so there are no ties.
        let (mut best_steps, mut index) = (u32::MAX, 0usize);
        for (i, &pos) in self.free.iter().enumerate() {
            let steps = mulmod.mul(pos + offset, inverse);
            if steps < best_steps {
                best_steps = steps;
                index = i;
            }
        }
        if index >= self.free.len() {
            return self.remaining == 0;
        }
        let pos = self.free.swap_remove(index);
        cursor.pos = self.add_mod(pos, cursor.skip);
        self.take(pos, cursor.input_index)
    }
}

/// All `size` slots free: whole words of ones, then the partial last word.
fn vacancy_bitmap(size: usize) -> Vec<u64> {
    let mut bits = vec![u64::MAX; size.div_ceil(64)];
    if let Some(last) = bits.last_mut() {
        if size % 64 != 0 {
            *last = (1u64 << (size % 64)) - 1;
        }
    }
    bits
}

/// Free-slot count at which claims switch from probing to the free list.
/// Probing costs about `size / free` probes per claim and the list `free`
/// multiply-and-reduce steps, each about as dear as a probe (measured in
/// instructions at 65537 slots: `sqrt(size)` beat half and twice that), so
/// they break even near `sqrt(size)`.
fn endgame_threshold(size: usize) -> usize {
    (size as f64).sqrt() as usize
}

/// How the weighted fill is executed. Both give the same table; they differ
/// only in cost, which depends on how skewed the weights are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FillStrategy {
    Rounds,
    Events,
}

/// Overrides of the automatic choices, for tests that check every way of
/// filling gives the same table.
#[derive(Clone, Copy, Debug, Default)]
struct FillOptions {
    strategy: Option<FillStrategy>,
    endgame_at: Option<usize>,
}

impl FillStrategy {
    /// The round loop costs about `size * max_weight / mean_weight` credit
    /// steps, the event heap about `size * log2(n)` heap steps (each several
    /// times dearer). Rounds win unless one weight dwarfs the mean.
    fn choose(cursors: &[Cursor], max_weight: u32) -> Self {
        let sum: u64 = cursors.iter().map(|c| c.weight as u64).sum();
        let n = cursors.len() as u64;
        if (max_weight as u64) * n <= 16 * sum {
            FillStrategy::Rounds
        } else {
            FillStrategy::Events
        }
    }
}

impl MaglevTable {
    /// Builds the table for `backends` with `size` slots under the service's
    /// `seed`.
    ///
    /// Slots hold indices into `backends` as given; [`NO_BACKEND`] appears
    /// only when no backend has weight > 0 (then every slot is empty).
    /// Errors: `size` not a prime in [7, 2^24]; more than 65534 backends;
    /// more backends with weight > 0 than slots; an (address, port) twice.
    pub fn build(
        backends: &[MaglevBackend],
        size: u32,
        seed: u64,
    ) -> Result<MaglevTable, MaglevError> {
        Self::build_with(backends, size, seed, FillOptions::default())
    }

    fn build_with(
        backends: &[MaglevBackend],
        size: u32,
        seed: u64,
        options: FillOptions,
    ) -> Result<MaglevTable, MaglevError> {
        validate_table_size(size)?;
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::BackendIndexOverflow {
                backends: backends.len(),
            });
        }

        // Canonical order: the fill visits backends sorted by identity, so the
        // result cannot depend on the caller's order. Indices fit u16 (checked
        // above).
        let mut canonical: Vec<u16> = (0..backends.len() as u16).collect();
        canonical.sort_unstable_by_key(|&i| backends[i as usize].identity_key());
        for pair in canonical.windows(2) {
            let (a, b) = (&backends[pair[0] as usize], &backends[pair[1] as usize]);
            if a.identity_key() == b.identity_key() {
                return Err(MaglevError::DuplicateBackend {
                    endpoint: a.endpoint(),
                });
            }
        }

        let active = canonical
            .iter()
            .filter(|&&i| backends[i as usize].weight > 0)
            .count();
        if active > size as usize {
            return Err(MaglevError::TooManyBackends {
                backends: active,
                size,
            });
        }

        let mut slots = vec![NO_BACKEND; size as usize].into_boxed_slice();
        let table_seed_offset = hash_words_v1(seed, OFFSET_DOMAIN, 0);
        let table_seed_skip = hash_words_v1(seed, SKIP_DOMAIN, 0);
        let mut cursors: Vec<Cursor> = Vec::with_capacity(active);
        for &i in &canonical {
            let backend = &backends[i as usize];
            if backend.weight == 0 {
                continue;
            }
            let identity = IdentityBytes::of(backend);
            let offset = reduce(hash_bytes_v1(identity.as_bytes(), table_seed_offset), size);
            let skip = 1 + reduce(
                hash_bytes_v1(identity.as_bytes(), table_seed_skip),
                size - 1,
            );
            cursors.push(Cursor::new(offset, skip, backend.weight, i));
        }

        if let Some(max_weight) = cursors.iter().map(|c| c.weight).max() {
            let strategy = options
                .strategy
                .unwrap_or_else(|| FillStrategy::choose(&cursors, max_weight));
            let endgame_at = options
                .endgame_at
                .unwrap_or_else(|| endgame_threshold(slots.len()));
            let mut filling = Filling::new(&mut slots, endgame_at);
            match strategy {
                FillStrategy::Rounds => fill_by_rounds(&mut filling, &mut cursors, max_weight),
                FillStrategy::Events => fill_by_events(&mut filling, &mut cursors, max_weight),
            }
        }

        Ok(MaglevTable {
            slots,
            size,
            fastmod_m: fastmod_constant(size),
        })
    }

    /// Number of slots (a prime).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The slot -> backend index array, `size()` long.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// True when no backend has weight > 0: every lookup returns `None`.
    pub fn is_empty(&self) -> bool {
        self.slots.first().copied().unwrap_or(NO_BACKEND) == NO_BACKEND
    }

    /// The slot a flow hash maps to: `((flow_hash >> 32) as u32) % size`
    /// (the high half is what the V1 mixer randomises best). Part of the
    /// stable contract; computed with a precomputed fastmod constant.
    #[inline(always)]
    pub fn slot_of(&self, flow_hash: u64) -> u32 {
        fastmod_u32((flow_hash >> 32) as u32, self.fastmod_m, self.size)
    }

    /// Backend index for a flow hash; `None` if the table is empty.
    /// Hot path: two multiplications and one load, no division.
    #[inline(always)]
    pub fn lookup(&self, flow_hash: u64) -> Option<u16> {
        let backend = *self.slots.get(self.slot_of(flow_hash) as usize)?;
        (backend != NO_BACKEND).then_some(backend)
    }

    /// Slots owned by each of `backend_count` backends (indices as given to
    /// `build`); for stats and `explain`, not the hot path.
    pub fn slot_counts(&self, backend_count: usize) -> Vec<u32> {
        let mut counts = vec![0u32; backend_count];
        for &s in self.slots.iter() {
            if let Some(c) = counts.get_mut(s as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Digest of the slot -> backend identity (address, port) mapping, so two
    /// instances (or two builds with differently ordered inputs) can compare
    /// tables. `backends` must be the slice the table was built from; an index
    /// it lacks hashes as a fixed "unknown" marker rather than panicking.
    pub fn digest(&self, backends: &[MaglevBackend]) -> u64 {
        let identity_hashes: Vec<u64> = backends
            .iter()
            .map(|b| hash_bytes_v1(IdentityBytes::of(b).as_bytes(), DIGEST_SEED))
            .collect();
        let mut acc = hash_words_v1(self.size as u64, 1, DIGEST_SEED);
        for &s in self.slots.iter() {
            let word = if s == NO_BACKEND {
                DIGEST_EMPTY_SLOT
            } else {
                identity_hashes
                    .get(s as usize)
                    .copied()
                    .unwrap_or(DIGEST_UNKNOWN_INDEX)
            };
            acc = hash_words_v1(acc, word, DIGEST_SEED);
        }
        acc
    }
}

/// Weighted fill, per-round credit (Katran's `MaglevV2`): every round each
/// backend, in canonical order, adds its weight to its credit and, once the
/// credit reaches the largest weight, spends that much to claim its next free
/// slot. After `r` rounds backend `i` has claimed `floor(r * w_i / w_max)`
/// slots. The fill stops inside some round, which leaves the round count off
/// the ideal by at most `N * w_max / sum(w)`; so backend `i`'s slot count is
/// off its ideal `size * w_i / sum(w)` by at most `1 + N * w_i / sum(w)` slots,
/// i.e. by at most 1% of its own share (plus one slot) once `size > 100 x N`:
/// inside the 1%-of-table bound with room to spare. Cilium's float credit
/// against the mean weight gives the same shares but depends on float
/// rounding; Katran's integer form is exact, so every instance agrees bit for
/// bit. Ties (two backends wanting the same slot) go to whichever claims first
/// in a round: the one earlier in canonical (address, port) order, never the
/// earlier in the caller's list. With equal weights this is plain Maglev.
fn fill_by_rounds(filling: &mut Filling<'_>, cursors: &mut [Cursor], max_weight: u32) {
    loop {
        for cursor in cursors.iter_mut() {
            cursor.credit += cursor.weight as u64;
            if cursor.credit < max_weight as u64 {
                continue;
            }
            cursor.credit -= max_weight as u64;
            if filling.claim(cursor) {
                return;
            }
        }
    }
}

/// The same fill order as [`fill_by_rounds`], driven by events so that a
/// skewed weight set (one backend at 10^9, the rest at 1) costs
/// `O(size log n)` instead of `size` rounds over all `n` backends. Backend
/// `i`'s `k`-th claim happens in round `ceil(k * w_max / w_i)`; within a round
/// claims go in canonical order, which the heap key `(round, position)`
/// reproduces.
fn fill_by_events(filling: &mut Filling<'_>, cursors: &mut [Cursor], max_weight: u32) {
    let max_weight = max_weight as u64;
    let round_of_claim = |claim: u64, weight: u32| (claim * max_weight).div_ceil(weight as u64);
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = cursors
        .iter()
        .enumerate()
        .map(|(position, c)| Reverse((round_of_claim(1, c.weight), position as u32)))
        .collect();
    while let Some(Reverse((_, position))) = heap.pop() {
        let Some(cursor) = cursors.get_mut(position as usize) else {
            continue;
        };
        if filling.claim(cursor) {
            return;
        }
        // credit counts claims here; claims <= size <= 2^24 and weights
        // < 2^32, so the round number stays below 2^56.
        cursor.credit += 1;
        heap.push(Reverse((
            round_of_claim(cursor.credit + 1, cursor.weight),
            position,
        )));
    }
}

impl fmt::Debug for MaglevTable {
    // The slot array is 64K entries; print its shape, not its contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.slots[..self.slots.len().min(8)];
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("empty", &self.is_empty())
            .field("first_slots", &head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assume, prop_oneof, Just, Strategy};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4_backends(n: usize, weight: impl Fn(usize) -> u32) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| {
                let addr = Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
                MaglevBackend::new(IpAddr::V4(addr), 8080, weight(i))
            })
            .collect()
    }

    #[test]
    fn fastmod_matches_modulo() {
        let mut sizes: Vec<u32> = TABLE_SIZES.to_vec();
        sizes.extend([7, 11, 16_777_213]);
        let edges = [
            0u32,
            1,
            2,
            6,
            7,
            65536,
            65537,
            65538,
            u32::MAX - 1,
            u32::MAX,
        ];
        for &d in &sizes {
            let m = fastmod_constant(d);
            for &a in &edges {
                assert_eq!(fastmod_u32(a, m, d), a % d, "a={a} d={d}");
            }
            let mut x = 0x1234_5678_9abc_def0u64;
            for _ in 0..10_000 {
                x = hash_words_v1(x, d as u64, 3);
                let a = (x >> 32) as u32;
                assert_eq!(fastmod_u32(a, m, d), a % d, "a={a} d={d}");
            }
        }
    }

    #[test]
    fn slot_of_is_high_half_mod_size() {
        let t = MaglevTable::build(&v4_backends(3, |_| 1), 251, 0).unwrap();
        for h in [
            0u64,
            u64::MAX,
            0xffff_ffff,
            0x1_0000_0000,
            251 << 32,
            252 << 32,
        ] {
            assert_eq!(t.slot_of(h), ((h >> 32) as u32) % 251);
        }
    }

    #[test]
    fn sizes_must_be_prime_and_in_range() {
        for &size in TABLE_SIZES {
            assert_eq!(validate_table_size(size), Ok(()));
        }
        assert_eq!(
            validate_table_size(65536),
            Err(MaglevError::NotPrime(65536))
        );
        assert_eq!(validate_table_size(1001), Err(MaglevError::NotPrime(1001)));
        assert_eq!(validate_table_size(5), Err(MaglevError::SizeOutOfRange(5)));
        assert_eq!(validate_table_size(0), Err(MaglevError::SizeOutOfRange(0)));
        assert_eq!(
            validate_table_size(16_777_259),
            Err(MaglevError::SizeOutOfRange(16_777_259))
        );
        let msg = MaglevTable::build(&[], 1000, 0).unwrap_err().to_string();
        assert!(msg.contains("65537") && msg.contains("251"), "{msg}");
        assert!(is_prime(16_777_213) && is_prime(7) && !is_prime(9) && !is_prime(1));
    }

    #[test]
    fn rejects_too_many_backends() {
        let eight = v4_backends(8, |_| 1);
        assert_eq!(
            MaglevTable::build(&eight, 7, 0),
            Err(MaglevError::TooManyBackends {
                backends: 8,
                size: 7
            })
        );
        // Draining backends take no slot, so they do not count against the size.
        let mut seven_active = eight.clone();
        seven_active[3].weight = 0;
        let t = MaglevTable::build(&seven_active, 7, 0).unwrap();
        assert_eq!(t.slot_counts(8)[3], 0);
        assert!(t
            .slot_counts(8)
            .iter()
            .enumerate()
            .all(|(i, &c)| i == 3 || c == 1));

        let huge = v4_backends(MAX_BACKENDS + 1, |_| 0);
        assert_eq!(
            MaglevTable::build(&huge, DEFAULT_TABLE_SIZE, 0),
            Err(MaglevError::BackendIndexOverflow {
                backends: MAX_BACKENDS + 1
            })
        );
    }

    #[test]
    fn rejects_duplicate_identities_even_with_different_weights() {
        let mut b = v4_backends(5, |_| 1);
        b.push(MaglevBackend { weight: 7, ..b[2] });
        let err = MaglevTable::build(&b, 251, 0).unwrap_err();
        assert_eq!(
            err,
            MaglevError::DuplicateBackend {
                endpoint: b[2].endpoint()
            }
        );
        assert!(err.to_string().contains("10.1.0.2:8080"));
        // Same address, other port: a different backend.
        b[5].port = 8081;
        assert!(MaglevTable::build(&b, 251, 0).is_ok());
    }

    #[test]
    fn all_zero_weights_or_no_backends_give_an_empty_table() {
        for backends in [vec![], v4_backends(4, |_| 0)] {
            let t = MaglevTable::build(&backends, 251, 9).unwrap();
            assert!(t.is_empty());
            assert_eq!(t.size(), 251);
            assert!(t.slots().iter().all(|&s| s == NO_BACKEND));
            for h in [0u64, 1 << 40, u64::MAX] {
                assert_eq!(t.lookup(h), None);
            }
        }
    }

    #[test]
    fn ipv4_and_mapped_ipv6_are_distinct_backends() {
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        let b = [
            MaglevBackend::new(IpAddr::V4(v4), 80, 1),
            MaglevBackend::new(IpAddr::V6(v4.to_ipv6_mapped()), 80, 1),
            MaglevBackend::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80, 1),
        ];
        let t = MaglevTable::build(&b, 1021, 0).unwrap();
        assert!(
            t.slot_counts(3).iter().all(|&c| c > 300),
            "{:?}",
            t.slot_counts(3)
        );
    }

    #[test]
    fn strategies_agree_on_skewed_and_even_weights() {
        let weight_sets: [&dyn Fn(usize) -> u32; 4] = [
            &|_| 1,
            &|i| (i as u32 % 100) + 1,
            &|i| if i == 0 { u32::MAX } else { 1 + i as u32 % 3 },
            &|i| {
                if i % 7 == 0 {
                    0
                } else {
                    1_000_000 / (i as u32 + 1)
                }
            },
        ];
        for (k, weight) in weight_sets.iter().enumerate() {
            for (n, size) in [(1, 7), (5, 251), (40, 4093), (300, 65537)] {
                let b = v4_backends(n, weight);
                let rounds = MaglevTable::build_with(
                    &b,
                    size,
                    5,
                    FillOptions {
                        strategy: Some(FillStrategy::Rounds),
                        endgame_at: None,
                    },
                )
                .unwrap();
                let events = MaglevTable::build_with(
                    &b,
                    size,
                    5,
                    FillOptions {
                        strategy: Some(FillStrategy::Events),
                        endgame_at: None,
                    },
                )
                .unwrap();
                assert_eq!(
                    rounds.slots(),
                    events.slots(),
                    "weights #{k}, n={n}, size={size}"
                );
            }
        }
    }

    #[test]
    fn extreme_weight_skew_builds_and_stays_proportional() {
        // Through the round loop this would be ~65537 rounds x 1000 backends;
        // the chooser must switch to events.
        let b = v4_backends(1000, |i| if i == 0 { 4_000_000_000 } else { 4_000_000 });
        let t = MaglevTable::build(&b, 131_071, 1).unwrap();
        let counts = t.slot_counts(b.len());
        let total: u64 = b.iter().map(|b| b.weight as u64).sum();
        for (c, backend) in counts.iter().zip(&b) {
            let ideal = 131_071.0 * backend.weight as f64 / total as f64;
            // The documented bound of `fill_by_rounds`: 1 + N * w_i / sum(w).
            let bound = 1.0 + 1000.0 * backend.weight as f64 / total as f64;
            assert!((*c as f64 - ideal).abs() <= bound, "{c} vs {ideal}");
            assert!((*c as f64 - ideal).abs() / 131_071.0 < 0.01);
        }
    }

    #[test]
    fn lookup_returns_the_slot_owner() {
        let b = v4_backends(10, |i| i as u32 + 1);
        let t = MaglevTable::build(&b, 4093, 2).unwrap();
        let mut h = 1u64;
        for _ in 0..10_000 {
            h = hash_words_v1(h, 0, 0);
            let owner = t.lookup(h).unwrap();
            assert!(owner < 10);
            assert_eq!(owner, t.slots()[t.slot_of(h) as usize]);
        }
    }

    #[test]
    fn digest_ignores_input_order_and_sees_changes() {
        let b = v4_backends(20, |i| i as u32 % 4 + 1);
        let t = MaglevTable::build(&b, 4093, 7).unwrap();
        let mut reversed = b.clone();
        reversed.reverse();
        let t_rev = MaglevTable::build(&reversed, 4093, 7).unwrap();
        assert_ne!(t.slots(), t_rev.slots());
        assert_eq!(t.digest(&b), t_rev.digest(&reversed));

        let mut reweighted = b.clone();
        reweighted[4].weight += 3;
        let t2 = MaglevTable::build(&reweighted, 4093, 7).unwrap();
        assert_ne!(t.digest(&b), t2.digest(&reweighted));
        // A wrong backend slice must not panic.
        assert_ne!(t.digest(&b[..3]), t.digest(&b));
    }

    #[test]
    fn v1_tables_are_frozen() {
        // Part of the contract between instances: a failure here means every
        // running service would move flows after an upgrade.
        let b = v4_backends(16, |i| i as u32 % 5);
        let t = MaglevTable::build(&b, 251, 42).unwrap();
        assert_eq!(&t.slots()[..16], FROZEN_HEAD);
        assert_eq!(t.digest(&b), FROZEN_DIGEST);
        let t = MaglevTable::build(&b, DEFAULT_TABLE_SIZE, 42).unwrap();
        assert_eq!(t.digest(&b), FROZEN_DIGEST_65537);
    }

    /// The fill as specified, with nothing clever: backend `b`'s `j`-th
    /// permutation entry is `(offset + j * skip) mod size`, computed afresh;
    /// every round each backend (canonical order) adds its weight to its
    /// credit and, once the credit reaches the largest weight, spends that
    /// much on the first free entry of its permutation.
    fn reference_fill(backends: &[MaglevBackend], size: u32, seed: u64) -> Vec<u16> {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by_key(|&i| (backends[i].addr, backends[i].port));
        let offset_seed = hash_words_v1(seed, OFFSET_DOMAIN, 0);
        let skip_seed = hash_words_v1(seed, SKIP_DOMAIN, 0);
        // (input index, weight, offset, skip, next j, credit)
        let mut active: Vec<(u16, u64, u64, u64, u64, u64)> = order
            .iter()
            .filter(|&&i| backends[i].weight > 0)
            .map(|&i| {
                let id = IdentityBytes::of(&backends[i]);
                let offset = reduce(hash_bytes_v1(id.as_bytes(), offset_seed), size);
                let skip = 1 + reduce(hash_bytes_v1(id.as_bytes(), skip_seed), size - 1);
                let weight = backends[i].weight as u64;
                (i as u16, weight, offset as u64, skip as u64, 0, 0)
            })
            .collect();
        let mut table = vec![NO_BACKEND; size as usize];
        let Some(max_weight) = active.iter().map(|a| a.1).max() else {
            return table;
        };
        let mut filled = 0;
        loop {
            for (index, weight, offset, skip, next_j, credit) in active.iter_mut() {
                *credit += *weight;
                if *credit < max_weight {
                    continue;
                }
                *credit -= max_weight;
                loop {
                    let pos = ((*offset + *next_j * *skip) % size as u64) as usize;
                    *next_j += 1;
                    if table[pos] == NO_BACKEND {
                        table[pos] = *index;
                        filled += 1;
                        break;
                    }
                }
                if filled == size as usize {
                    return table;
                }
            }
        }
    }

    fn random_backends() -> impl Strategy<Value = Vec<MaglevBackend>> {
        let weight = prop_oneof![
            3 => Just(1u32),
            2 => 0u32..=10,
            2 => 1u32..=1000,
            1 => Just(0u32),
            1 => Just(1_000_000u32),
            1 => Just(u32::MAX),
        ];
        proptest::collection::btree_map(
            (any::<bool>(), any::<u32>(), any::<u16>()),
            weight,
            1..=300,
        )
        .prop_map(|ids| {
            ids.into_iter()
                .map(|((v6, addr, port), w)| {
                    let ip = if v6 {
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            0,
                            0,
                            0,
                            0,
                            (addr >> 16) as u16,
                            addr as u16,
                        ))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(addr))
                    };
                    MaglevBackend::new(ip, port, w)
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The optimised fill (look-ahead probing, then the free list) gives
        /// the reference's table, slot for slot, under both strategies and
        /// whatever the endgame threshold: never, the default, or early.
        #[test]
        fn fill_matches_reference_fill(
            backends in random_backends(),
            size in proptest::sample::select(&[251u32, 509, 4093, 65537][..]),
            seed in any::<u64>(),
        ) {
            let active = backends.iter().filter(|b| b.weight > 0).count();
            prop_assume!(active <= size as usize);
            let expected = reference_fill(&backends, size, seed);
            let early = if size > 4093 { 2048 } else { size as usize };
            for strategy in [FillStrategy::Rounds, FillStrategy::Events] {
                for endgame_at in [None, Some(0), Some(early)] {
                    let options = FillOptions { strategy: Some(strategy), endgame_at };
                    let table = MaglevTable::build_with(&backends, size, seed, options).unwrap();
                    prop_assert!(
                        table.slots() == &expected[..],
                        "{:?}, endgame at {:?}, size {}, n {}", strategy, endgame_at, size, backends.len()
                    );
                }
            }
            let table = MaglevTable::build(&backends, size, seed).unwrap();
            prop_assert!(table.slots() == &expected[..]);
        }
    }

    #[test]
    fn modular_inverse_and_product_are_exact() {
        for &size in &[7u32, 251, 4093, 65537, 16_777_213] {
            let mulmod = MulMod::new(size);
            let mut x = 0x9e37_79b9u64;
            for _ in 0..2000 {
                x = hash_words_v1(x, size as u64, 1);
                let a = (x % size as u64) as u32;
                let b = ((x >> 32) % size as u64) as u32;
                assert_eq!(mulmod.mul(a, b) as u64, a as u64 * b as u64 % size as u64);
                if a != 0 {
                    assert_eq!(mulmod.mul(a, mulmod.inverse(a)), 1, "a={a} size={size}");
                }
            }
            assert_eq!(mulmod.mul(size - 1, size - 1), 1);
        }
    }

    const FROZEN_HEAD: &[u16] = &[4, 12, 11, 3, 14, 7, 12, 8, 13, 9, 2, 13, 7, 9, 4, 1];
    const FROZEN_DIGEST: u64 = 15_759_266_772_233_448_414;
    const FROZEN_DIGEST_65537: u64 = 17_574_570_730_400_831_518;
}
