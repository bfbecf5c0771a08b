//! The global endpoint array, in fixed-size chunks shared between
//! generations.
//!
//! A change to one service rewrites a block of a hundred-odd indices; with a
//! flat array every generation would copy all of them (100k entries, ~3 MB
//! at 1000 x 100) and every worker would walk all of them to carry its
//! counters. Chunks are copy-on-write (`Arc::make_mut`): a generation shares
//! every chunk it did not write with its parent, a lookup stays two
//! dependent loads, and "which indices may differ" is a pointer comparison
//! per chunk ([`EndpointTable::changed_ranges`]).

use std::ops::Range;
use std::sync::Arc;

use super::EndpointRt;

/// log2 of the chunk length. 256 endpoints (~7 KB) per chunk: small enough
/// that a one-service change copies a few KB, large enough that the chunk
/// vector of a 100k-endpoint generation (400 pointers) clones in a few
/// microseconds.
const CHUNK_BITS: u32 = 8;
/// Endpoints per chunk.
pub(super) const ENDPOINT_CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: usize = ENDPOINT_CHUNK - 1;

type Chunk = [EndpointRt; ENDPOINT_CHUNK];

/// Endpoints by global index. Indices in `len..` of the last chunk are
/// holes nobody refers to.
#[derive(Clone, Debug, Default)]
pub(super) struct EndpointTable {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

impl EndpointTable {
    /// The endpoint at `idx`. Like indexing a slice, an index no generation
    /// handed out panics; data-path indices all come from this generation
    /// (or are re-resolved by identity on a generation change).
    #[inline]
    pub fn get(&self, idx: u32) -> &EndpointRt {
        let i = idx as usize;
        &self.chunks[i >> CHUNK_BITS][i & CHUNK_MASK]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every endpoint in index order, holes included.
    pub fn iter(&self) -> impl Iterator<Item = &EndpointRt> + '_ {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// Writes `e` at `idx`, copying the chunk first if a parent generation
    /// shares it. Writing the value already there copies nothing, so the
    /// callers may rewrite a whole block and pay only for what differs.
    pub fn set(&mut self, idx: u32, e: EndpointRt) {
        let i = idx as usize;
        let chunk = &mut self.chunks[i >> CHUNK_BITS];
        if chunk[i & CHUNK_MASK] != e {
            Arc::make_mut(chunk)[i & CHUNK_MASK] = e;
        }
    }

    /// Makes the chunks covering `range` this generation's own, written or
    /// not: for changes that keep every field but alter what an index
    /// *means* (a service's key), which [`EndpointTable::changed_ranges`]
    /// must still report.
    pub fn unshare(&mut self, range: Range<u32>) {
        if range.is_empty() {
            return;
        }
        let first = range.start as usize >> CHUNK_BITS;
        let last = (range.end as usize - 1) >> CHUNK_BITS;
        for chunk in &mut self.chunks[first..=last] {
            if Arc::strong_count(chunk) > 1 {
                *chunk = Arc::new(**chunk);
            }
        }
    }

    /// Extends the table to `new_len` indices, the new ones set to `fill`.
    pub fn grow(&mut self, new_len: usize, fill: EndpointRt) {
        for i in self.len..new_len.min(self.chunks.len() * ENDPOINT_CHUNK) {
            self.set(i as u32, fill);
        }
        while self.chunks.len() * ENDPOINT_CHUNK < new_len {
            self.chunks.push(Arc::new([fill; ENDPOINT_CHUNK]));
        }
        self.len = self.len.max(new_len);
    }

    /// Index ranges (ascending, disjoint) whose endpoints may differ
    /// between `older` and `self`: every chunk not shared, and any index
    /// valid in only one of them. Everything outside them is the same
    /// endpoint at the same index.
    pub fn changed_ranges<'a>(
        &'a self,
        older: &'a EndpointTable,
    ) -> impl Iterator<Item = Range<u32>> + 'a {
        let span = self.len.max(older.len);
        let chunks = span.div_ceil(ENDPOINT_CHUNK);
        let differs = move |k: usize| {
            let start = k * ENDPOINT_CHUNK;
            let end = start + ENDPOINT_CHUNK;
            // A chunk only one side fully covers counts as changed.
            let covered = |t: &EndpointTable| t.len.min(end).saturating_sub(start);
            match (self.chunks.get(k), older.chunks.get(k)) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) || covered(self) != covered(older),
                _ => true,
            }
        };
        let mut k = 0;
        std::iter::from_fn(move || {
            while k < chunks && !differs(k) {
                k += 1;
            }
            if k >= chunks {
                return None;
            }
            let start = k;
            while k < chunks && differs(k) {
                k += 1;
            }
            let end = (k * ENDPOINT_CHUNK).min(span);
            Some((start * ENDPOINT_CHUNK) as u32..end as u32)
        })
    }

    /// (chunks shared with `other`, chunks in `self`).
    pub fn sharing(&self, other: &EndpointTable) -> (usize, usize) {
        super::shared_arcs(&self.chunks, &other.chunks)
    }
}
