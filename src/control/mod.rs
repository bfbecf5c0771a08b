//! The control thread: the operator's configuration (store), the control
//! socket and its protocol, the configuration file, metrics, and the
//! publishing of generations to workers.

pub mod protocol;
mod publish;

pub use publish::{Dataplane, PublishError};
