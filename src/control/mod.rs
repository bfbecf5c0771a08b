//! The control thread: the operator's configuration (store), the control
//! socket and its protocol, the configuration file, metrics, and the
//! publishing of generations to workers.

pub mod announce;
pub mod arp;
pub mod bench;
pub mod bgp;
pub mod client;
pub mod config;
pub mod health;
pub mod protocol;
mod publish;
pub mod query;
pub mod render;
pub mod sched;
pub mod server;
pub mod store;

pub use config::Config;
pub use protocol::{Outcome, Request, Response};
pub use publish::{Dataplane, PublishError};
pub use sched::ControlPriority;
pub use server::{ControlHandle, ControlServer, Limits, ServerOptions};
pub use store::Store;
