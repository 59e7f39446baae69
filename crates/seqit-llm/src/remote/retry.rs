//! When to try again: exponential backoff with jitter, or the wait a server asked for in
//! `Retry-After` (seconds or an HTTP date) or `retry-after-ms`.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::HeaderMap;

/// Exponential backoff: attempt `k` (0-based) waits a random time in
/// `[d/2, d]` with `d = min(base * 2^k, max)` ("equal jitter").
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait before the first retry, before jitter.
    pub base: Duration,
    /// Longest wait between attempts, before jitter.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry `attempt` (0-based), drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let factor = 2f64.powi(attempt.min(30) as i32);
        let full = (self.base.as_secs_f64() * factor).min(self.max.as_secs_f64());
        Duration::from_secs_f64(full / 2.0 + rng.random_range(0.0..=full / 2.0))
    }
}

/// The wait before retrying after a server asked for `retry_after`: never less than
/// asked, plus up to 10% (at most 1 s) of jitter so that clients told the same time do
/// not all return at once.
pub fn honour_retry_after(retry_after: Duration, rng: &mut impl Rng) -> Duration {
    let jitter = (retry_after.as_secs_f64() * 0.1).min(1.0);
    retry_after + Duration::from_secs_f64(rng.random_range(0.0..=jitter))
}

/// The wait asked for by `retry-after-ms` or `Retry-After` (delay-seconds, fractional
/// seconds, or an HTTP date; a date in the past means no wait).
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&headers("retry-after", "3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&headers("retry-after", "0.5"), now),
            Some(Duration::from_millis(500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            parse_retry_after(&headers("retry-after", &date), now),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(
            parse_retry_after(&headers("retry-after", &past), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&headers("retry-after-ms", "250"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after(&headers("retry-after", "soon"), now),
            None
        );
        assert_eq!(parse_retry_after(&headers("retry-after", "-1"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = StdRng::seed_from_u64(1);
        for attempt in 0..10 {
            let full = (0.1 * 2f64.powi(attempt as i32)).min(2.0);
            let d = backoff.delay(attempt, &mut rng).as_secs_f64();
            assert!(
                d >= full / 2.0 - 1e-9 && d <= full + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
        let d = honour_retry_after(Duration::from_secs(2), &mut rng);
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
    }
}
