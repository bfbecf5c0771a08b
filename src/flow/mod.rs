//! Flow keys, per-worker flow tables and TCP state tracking.
//!
//! - [`key`]: [`FlowKey`], the client-side 5-tuple, and its stable hash;
//! - [`tcp`]: [`FlowState`] transitions (conntrack-like) and [`Timeouts`];
//! - [`table`]: [`FlowTable`], a preallocated slab plus hash index with incremental aging;
//! - [`save`]: snapshots of flow tables across a planned restart.

pub mod key;
pub mod save;
pub mod table;
pub mod tcp;

pub use key::{ip_proto, FlowKey, TableKey};
pub use save::SavedFlow;
pub use table::{
    advance_seq, EvictReason, FlowEntry, FlowId, FlowTable, FlowTableError, Inserted,
    EVICTION_SCAN, MAX_CAPACITY,
};
pub use tcp::{tcp_flags, Direction, FlowState, Tick, TimeoutTooLong, Timeouts, MAX_TIMEOUT_MS};
