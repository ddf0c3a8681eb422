//! Per-address rate limits at the HTTP edge: claims are limited per source
//! address (`claim_rate` per second, bursts of `claim_burst`), so a claim
//! flood from one address cannot crowd out the fleet; and at most
//! [`CLAIMS_AT_ONCE`] claims are looked up in the store at a time, so a
//! flood from many addresses waits its turn instead of crowding out the
//! measurement batches.
//!
//! Never: limit before a request's shape is checked (a malformed claim is
//! a 400 whatever its rate), or keep an address's state forever.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Claims the store looks up at once, from all addresses together.
pub const CLAIMS_AT_ONCE: usize = 2;

/// Dashboard login attempts per address: one every six seconds on
/// average, five at once (a typo or two, not a guessing loop).
pub const LOGIN_RATE: f64 = 1.0 / 6.0;
pub const LOGIN_BURST: u32 = 5;

/// Addresses remembered before idle ones are forgotten.
const PRUNE_ABOVE: usize = 10_000;

pub struct PerAddress {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl PerAddress {
    /// `rate` requests per second on average (held between one a
    /// thousand seconds and a billion a second), `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate.clamp(1e-3, 1e9));
        let quota = Quota::with_period(period)
            .expect("a period of at least a nanosecond")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// `Ok` when `addr` may go on; otherwise how long it should wait.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_addresses_are_apart() {
        let limit = PerAddress::new(1.0, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        let wait = limit.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limit.check(b).is_ok(), "another address has its own budget");
    }
}
