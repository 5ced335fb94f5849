//! Request rate limits: token buckets per user or source address, one set per class of request
//! (`[rate_limits]` in the config).
//!
//! Buckets live in memory only. A restart refills them, which is harmless because they protect
//! against bursts of seconds to minutes. The lockout after wrong passwords, which must survive a
//! restart, is stored by the `security` service.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caduceus_config::{RateLimit, RateLimitsConfig};
use ruma::{OwnedUserId, UserId};

use crate::error::{Error, ErrorCode, Result};

/// Above this many tracked keys, buckets that have refilled completely are dropped, since a full
/// bucket behaves exactly like a missing one.
const PRUNE_ABOVE: usize = 10_000;

/// A token bucket per key: `burst` requests at once, refilled at `per_second` requests per
/// second.
pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from the key's bucket, or returns how long until one is available.
    /// Always succeeds when the limit is off (`per_second` is 0).
    pub fn acquire(&self, key: &K) -> Result<(), Duration> {
        self.acquire_at(key, Instant::now())
    }

    fn acquire_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.limit.is_enabled() {
            return Ok(());
        }
        let capacity = f64::from(self.limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| self.refilled(bucket, now, capacity) < capacity);
        }
        let bucket =
            buckets.entry(key.clone()).or_insert(Bucket { tokens: capacity, updated: now });
        bucket.tokens = self.refilled(bucket, now, capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.limit.per_second))
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant, capacity: f64) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_second).min(capacity)
    }
}

/// The rate limits of the client API, one limiter per class in `[rate_limits]`.
///
/// Checks of what a user does take `exempt`: application services whose registration sets
/// `rate_limited: false` pass `true` and are never limited.
pub struct RateLimits {
    registration: RateLimiter<IpAddr>,
    login_per_address: RateLimiter<IpAddr>,
    login_per_user: RateLimiter<OwnedUserId>,
    messages: RateLimiter<OwnedUserId>,
    membership: RateLimiter<OwnedUserId>,
}

fn limit_exceeded(retry_after: Duration, what: &str) -> Error {
    // Round up to whole milliseconds so a client that waits exactly `retry_after_ms` finds a
    // token.
    let retry_after = Duration::from_millis(retry_after.as_micros().div_ceil(1000) as u64);
    Error::new(
        ErrorCode::LimitExceeded { retry_after: Some(retry_after) },
        format!("Too many {what}; try again in {} ms", retry_after.as_millis()),
    )
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self {
            registration: RateLimiter::new(config.registration),
            login_per_address: RateLimiter::new(config.login_per_address),
            login_per_user: RateLimiter::new(config.login_per_user),
            messages: RateLimiter::new(config.messages),
            membership: RateLimiter::new(config.membership),
        }
    }

    /// Counts a `POST /register` request from `address`. Requests without a known address
    /// (none arrive that way over TCP) are not limited.
    pub fn check_registration(&self, address: Option<IpAddr>) -> Result<()> {
        let Some(address) = address else { return Ok(()) };
        self.registration
            .acquire(&address)
            .map_err(|retry_after| limit_exceeded(retry_after, "registration attempts"))
    }

    /// Counts a `POST /login` request from `address`.
    pub fn check_login_address(&self, address: Option<IpAddr>) -> Result<()> {
        let Some(address) = address else { return Ok(()) };
        self.login_per_address
            .acquire(&address)
            .map_err(|retry_after| limit_exceeded(retry_after, "logins from this address"))
    }

    /// Counts a `POST /login` request for the account `user_id`, from any sender.
    pub fn check_login_user(&self, user_id: &UserId) -> Result<()> {
        self.login_per_user
            .acquire(&user_id.to_owned())
            .map_err(|retry_after| limit_exceeded(retry_after, "logins to this account"))
    }

    /// Counts an event that `user_id` sends: a message, a state event or a redaction.
    pub fn check_message(&self, user_id: &UserId, exempt: bool) -> Result<()> {
        if exempt {
            return Ok(());
        }
        self.messages
            .acquire(&user_id.to_owned())
            .map_err(|retry_after| limit_exceeded(retry_after, "events sent"))
    }

    /// Counts a join, invite or knock by `user_id`.
    pub fn check_membership(&self, user_id: &UserId, exempt: bool) -> Result<()> {
        if exempt {
            return Ok(());
        }
        self.membership
            .acquire(&user_id.to_owned())
            .map_err(|retry_after| limit_exceeded(retry_after, "joins, invites and knocks"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter<&'static str> {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn burst_then_refill() {
        let limiter = limiter(0.5, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.acquire_at(&"alice", start).is_ok());
        }
        let wait = limiter.acquire_at(&"alice", start).expect_err("the fourth request is limited");
        assert_eq!(wait, Duration::from_secs(2), "one token takes two seconds at 0.5/s");

        assert!(limiter.acquire_at(&"alice", start + Duration::from_millis(1999)).is_err());
        assert!(limiter.acquire_at(&"alice", start + Duration::from_secs(2)).is_ok());
        assert!(limiter.acquire_at(&"alice", start + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let limiter = limiter(1.0, 1);
        let start = Instant::now();
        assert!(limiter.acquire_at(&"alice", start).is_ok());
        assert!(limiter.acquire_at(&"alice", start).is_err());
        assert!(limiter.acquire_at(&"bob", start).is_ok(), "bob is not limited by alice");
    }

    #[test]
    fn refill_stops_at_burst() {
        let limiter = limiter(10.0, 2);
        let start = Instant::now();
        assert!(limiter.acquire_at(&"alice", start).is_ok());
        // An hour idle refills the bucket to two tokens, not to 36,000.
        let later = start + Duration::from_secs(3600);
        assert!(limiter.acquire_at(&"alice", later).is_ok());
        assert!(limiter.acquire_at(&"alice", later).is_ok());
        let wait = limiter.acquire_at(&"alice", later).expect_err("the burst is used up");
        assert_eq!(wait, Duration::from_millis(100));
    }

    #[test]
    fn partial_token_shortens_the_wait() {
        let limiter = limiter(1.0, 1);
        let start = Instant::now();
        assert!(limiter.acquire_at(&"alice", start).is_ok());
        let wait = limiter
            .acquire_at(&"alice", start + Duration::from_millis(750))
            .expect_err("three quarters of a token is not enough");
        assert_eq!(wait, Duration::from_millis(250));
    }

    #[test]
    fn zero_rate_is_off() {
        let limiter = limiter(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.acquire_at(&"alice", start).is_ok());
        }
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::<String>::new(RateLimit { per_second: 1.0, burst: 1 });
        let start = Instant::now();
        for index in 0..=PRUNE_ABOVE {
            assert!(limiter.acquire_at(&index.to_string(), start).is_ok());
        }
        assert_eq!(limiter.buckets.lock().unwrap().len(), PRUNE_ABOVE + 1);
        // One second later every bucket is full again, so the next request prunes them all.
        let later = start + Duration::from_secs(1);
        assert!(limiter.acquire_at(&"alice".to_owned(), later).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn exempt_senders_are_never_limited() {
        let config = RateLimitsConfig {
            messages: RateLimit { per_second: 0.001, burst: 1 },
            ..RateLimitsConfig::default()
        };
        let limits = RateLimits::new(&config);
        let bot = ruma::user_id!("@bridge:localhost");
        for _ in 0..10 {
            assert!(limits.check_message(bot, true).is_ok());
        }
        assert!(limits.check_message(bot, false).is_ok());
        let error = limits.check_message(bot, false).expect_err("the burst of one is used");
        let ErrorCode::LimitExceeded { retry_after: Some(wait) } = error.code() else {
            panic!("expected M_LIMIT_EXCEEDED with a delay, got {error:?}");
        };
        assert!(wait > Duration::from_secs(999), "{wait:?}");
    }
}
