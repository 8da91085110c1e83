//! A small BGP-4 speaker for `ipamd`: announces this node's blocks, learns the other
//! nodes' (or a router's) routes. See README.md.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
mod fsm;
#[allow(unsafe_code)] // setsockopt(TCP_MD5SIG): see the SAFETY notes
mod md5;
mod peer;
mod session;
mod speaker;
mod task;
mod types;
pub mod wire;

pub use config::{HoldTime, ImportFilter, PeerConfig, SpeakerConfig, Timers};
pub use fsm::State;
pub use speaker::{Error, Speaker};
pub use types::{PeerStatus, RouteEvent, RouteEventKind};
