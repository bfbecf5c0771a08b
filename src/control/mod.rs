//! The control thread's side of the data path: starting workers, publishing
//! generations to them and waiting until every worker runs one.

pub mod arp;
mod publish;

pub use publish::{Dataplane, PublishError};
