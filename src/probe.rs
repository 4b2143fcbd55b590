//! Looking again for an API whose CRDs are not installed. The report APIs
//! the audit writes (PolicyReports, OpenReports) and the egress layer kinds
//! the state watches (Cilium, Calico, AdminNetworkPolicy) may be installed
//! after the operator started: each missing one is looked for again at most
//! every [`MISSING_API_PROBE_EVERY`], so it is picked up without a restart.

use std::time::{Duration, Instant};

/// How often a missing API is looked for again (one request each time).
pub const MISSING_API_PROBE_EVERY: Duration = Duration::from_secs(15);

/// When an API was last looked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    last: Option<Instant>,
}

impl Probe {
    /// Never looked for, or last looked for at least `every` ago.
    pub fn is_due(&self, every: Duration) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= every)
    }

    /// Record a look now. True when it is the first (the caller logs a
    /// missing API once, not at every look).
    pub fn looked(&mut self) -> bool {
        let first = self.last.is_none();
        self.last = Some(Instant::now());
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_first_then_after_the_period() {
        let mut probe = Probe::default();
        assert!(probe.is_due(Duration::from_secs(3600)));
        assert!(probe.looked());
        assert!(!probe.is_due(Duration::from_secs(3600)));
        assert!(probe.is_due(Duration::ZERO));
        assert!(!probe.looked());
    }
}
