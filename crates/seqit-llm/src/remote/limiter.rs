//! Token buckets for requests-per-minute and tokens-per-minute limits.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A bucket refilled at `per_minute / 60` units per second, holding at most one
/// second's worth (at least one unit). A caller takes `cost` units once the bucket
/// holds `min(cost, capacity)`; a cost above capacity leaves the bucket in debt, which
/// later callers wait out, so the long-run rate never exceeds the limit.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A bucket for `limit` units per minute (at least 1), full at the start.
    pub fn per_minute(limit: u64) -> Self {
        let per_second = limit.max(1) as f64 / 60.0;
        let capacity = per_second.max(1.0);
        Self {
            capacity,
            per_second,
            state: Mutex::new(BucketState {
                level: capacity,
                updated: Instant::now(),
            }),
        }
    }

    /// Waits until `cost` units can be taken, then takes them.
    pub async fn acquire(&self, cost: f64) {
        loop {
            let wait = {
                let mut state = self.state.lock().expect("bucket lock");
                self.refill(&mut state);
                let needed = cost.min(self.capacity);
                if state.level >= needed {
                    state.level -= cost;
                    return;
                }
                (needed - state.level) / self.per_second
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.001))).await;
        }
    }

    /// Gives back units taken on an estimate that turned out too high (or takes more,
    /// for a negative amount).
    pub fn adjust(&self, amount: f64) {
        let mut state = self.state.lock().expect("bucket lock");
        self.refill(&mut state);
        state.level = (state.level + amount).min(self.capacity);
    }

    fn refill(&self, state: &mut BucketState) {
        let now = Instant::now();
        let elapsed = now.duration_since(state.updated).as_secs_f64();
        state.level = (state.level + elapsed * self.per_second).min(self.capacity);
        state.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keeps_the_rate() {
        // 600 per minute = 10 per second, bursts of 10.
        let bucket = TokenBucket::per_minute(600);
        let start = Instant::now();
        for _ in 0..40 {
            bucket.acquire(1.0).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!((2.9..3.2).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn large_costs_go_into_debt() {
        // 60 tokens per minute = 1 per second; a 5-token request passes at once, the next
        // waits for the debt to be repaid.
        let bucket = TokenBucket::per_minute(60);
        let start = Instant::now();
        bucket.acquire(5.0).await;
        assert!(start.elapsed() < Duration::from_millis(10));
        bucket.acquire(1.0).await;
        let elapsed = start.elapsed().as_secs_f64();
        assert!((4.9..5.2).contains(&elapsed), "{elapsed}");
        bucket.adjust(3.0);
        let again = Instant::now();
        bucket.acquire(1.0).await;
        assert!(again.elapsed().as_secs_f64() < 1.1);
    }
}
