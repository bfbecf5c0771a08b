//! Weighted Maglev consistent hashing.
