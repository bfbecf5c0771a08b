//! sluice: a kernel-bypass L4 service load balancer.
//!
//! Layers, bottom up (see DESIGN.md):
//! - [`wire`]: zero-copy packet views and incremental checksums;
//! - [`hash`]: the stable, versioned flow hash;
//! - [`maglev`]: weighted Maglev consistent hashing;
//! - [`flow`]: flow keys, per-worker flow tables, TCP state tracking;
//! - [`service`]: services, endpoints and immutable generations;
//! - [`nat`]: DNAT and reverse DNAT rewrites;
//! - [`port`]: packet I/O backends behind the [`port::Port`] trait;
//! - [`worker`]: the pinned poll loop and its verdicts and counters;
//! - [`control`]: generation publishing;
//! - [`bench`]: the synthetic-traffic benchmark behind `sluice bench`.

pub mod bench;
pub mod control;
pub mod flow;
pub mod hash;
pub mod maglev;
pub mod nat;
pub mod notify;
pub mod port;
pub mod rss;
pub mod run;
pub mod service;
pub mod wire;
pub mod worker;
