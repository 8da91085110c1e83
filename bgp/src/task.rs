//! The task of one configured peer: connection attempts (Idle, Connect, Active: see
//! `peer.rs`), then a session on the connection (OpenSent to its end: `session.rs`),
//! again, until the peer is removed. The only module that knows both, so neither of
//! them imports the other's caller.

use tokio::sync::mpsc;
use tracing::debug;

use crate::fsm::{Backoff, State};
use crate::peer::{connection, Control, Md5Watch, PeerCtx};
use crate::session::{self, Outcome, Start};

/// The task of one peer, until it is removed.
pub(crate) async fn run(mut ctx: PeerCtx, mut control: mpsc::Receiver<Control>) {
    let t = ctx.local.timers;
    let mut backoff = Backoff::new(t.connect_retry, t.max_backoff);
    let mut md5 = Md5Watch::default();
    let mut next: Option<Start> = None;
    loop {
        let start = match next.take() {
            Some(c) => c,
            None => {
                let delay = backoff.next_delay();
                match connection(&mut ctx, &mut control, delay, &mut md5).await {
                    Some((stream, outgoing)) => {
                        if let Ok(peer) = stream.peer_addr() {
                            debug!(peer = %ctx.cfg.address, %peer, outgoing, "connected");
                        }
                        Start::new(stream, outgoing, &ctx)
                    }
                    None => break,
                }
            }
        };
        match session::run(start, &mut ctx, &mut control).await {
            Outcome::Closed { established } => {
                if established.is_some() {
                    backoff.reset();
                }
                ctx.on_session_down(established);
            }
            Outcome::Switch {
                established,
                next: n,
            } => {
                ctx.on_session_down(established);
                next = Some(n);
            }
            Outcome::Shutdown => {
                ctx.on_session_down(None);
                break;
            }
        }
    }
    ctx.set_state(State::Idle);
    ctx.peer_down();
}
