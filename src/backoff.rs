//! One backoff rule for everything that retries against the API server: the
//! watches (`state`), the audit Lease (`audit::leader`) and self-managed
//! TLS (`tls::self_managed`).

use std::time::Duration;

/// Exponential backoff: `first` after the first failure, doubling with each
/// further consecutive failure, never more than `max` (nor less than
/// `first`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after `failures` consecutive failures. None yet counts as
    /// one: a short pause before starting over.
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_first_up_to_max() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(16));
        let waits: Vec<u64> = (0..9).map(|f| b.after(f).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]
        );
        assert_eq!(b.after(u32::MAX), Duration::from_secs(16));
    }

    #[test]
    fn max_below_first_means_first() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.after(1), Duration::from_secs(5));
        assert_eq!(b.after(4), Duration::from_secs(5));
    }
}
