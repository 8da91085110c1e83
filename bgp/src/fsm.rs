//! The states of RFC 4271 §8 and the back-off between attempts.

use std::time::Duration;

/// Session state of one peer (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying: waiting out the back-off after a failure.
    Idle,
    /// A TCP connection to the peer is being opened.
    Connect,
    /// Waiting for the peer to connect to us.
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::Active => "active",
            State::OpenSent => "opensent",
            State::OpenConfirm => "openconfirm",
            State::Established => "established",
        };
        f.write_str(s)
    }
}

/// Exponential back-off (§8.1.1 "DampPeerOscillations"): a peer that keeps failing is
/// retried less and less often; a session that reached Established resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            next: Duration::ZERO,
        }
    }
    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = if d.is_zero() {
            self.base
        } else {
            (d * 2).min(self.max)
        };
        d
    }
    pub fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HoldTime;

    #[test]
    fn hold_time_negotiation() {
        let ours = HoldTime::new(90).unwrap();
        assert_eq!(ours.negotiate(30), HoldTime::new(30));
        assert_eq!(ours.negotiate(180), Some(ours));
        assert_eq!(ours.negotiate(0), Some(HoldTime::NONE));
        assert_eq!(ours.negotiate(2), None);
        assert_eq!(ours.negotiate(1), None);
        assert_eq!(
            HoldTime::new(9).unwrap().keepalive_interval(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            HoldTime::new(3).unwrap().keepalive_interval(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(HoldTime::NONE.keepalive_interval(), None);
        assert_eq!(HoldTime::NONE.timeout(), None);
    }

    #[test]
    fn backoff_doubles_then_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
