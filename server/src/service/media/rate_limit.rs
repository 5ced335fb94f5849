//! A per-user token bucket that limits how many uploads each user starts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{OwnedUserId, UserId};

/// Above this many tracked users, buckets that have refilled completely are dropped, since a full
/// bucket behaves exactly like a missing one.
const PRUNE_ABOVE: usize = 10_000;

/// Allows `per_minute` requests per user and minute, in bursts of up to `per_minute`.
pub struct RateLimiter {
    capacity: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<OwnedUserId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self { capacity, refill_per_second: capacity / 60.0, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from the user's bucket, or returns how long until one is available.
    pub fn acquire(&self, user_id: &UserId) -> Result<(), Duration> {
        self.acquire_at(user_id, Instant::now())
    }

    pub(super) fn acquire_at(&self, user_id: &UserId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| self.refilled(bucket, now) < self.capacity);
        }
        let bucket = buckets
            .entry(user_id.to_owned())
            .or_insert(Bucket { tokens: self.capacity, updated: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.refill_per_second))
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.refill_per_second).min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::per_minute(3);
        let alice = ruma::user_id!("@alice:localhost");
        let bob = ruma::user_id!("@bob:localhost");
        let start = Instant::now();

        for _ in 0..3 {
            assert!(limiter.acquire_at(alice, start).is_ok());
        }
        let wait = limiter.acquire_at(alice, start).expect_err("the fourth upload is limited");
        assert!(wait > Duration::from_secs(19), "{wait:?}");
        assert!(wait <= Duration::from_secs(20), "{wait:?}");

        assert!(limiter.acquire_at(bob, start).is_ok(), "each user has their own bucket");
        assert!(limiter.acquire_at(alice, start + Duration::from_secs(20)).is_ok());
        assert!(limiter.acquire_at(alice, start + Duration::from_secs(21)).is_err());
    }
}
