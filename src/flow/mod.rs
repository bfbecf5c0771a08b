//! Flow keys, per-worker flow tables and TCP state tracking.
