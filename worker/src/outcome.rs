//! What happens to a message whose work failed: one pure decision.

use regindex::sync::SyncError;

/// Why a message's work failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Worth retrying later (registry or database unreachable, 5xx, broker hiccup).
    pub transient: bool,
    pub reason: String,
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            transient: true,
            reason: reason.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            transient: false,
            reason: reason.into(),
        }
    }
}

impl From<&SyncError> for Failure {
    /// The reason carries the whole cause chain ("error sending request ...: Connection
    /// refused"): it is what an operator reads in the dead-letter queue.
    fn from(error: &SyncError) -> Self {
        Self {
            transient: error.is_transient(),
            reason: regindex::error_chain(error),
        }
    }
}

/// Where a failed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// To the delay queue for retry number `attempts`.
    Retry { attempts: u32 },
    /// To the dead-letter queue.
    DeadLetter { attempts: u32, reason: String },
}

/// `previous_attempts` is the count the message carries (failed attempts before this one).
/// Transient failures retry until `max_attempts` attempts have failed; permanent ones are
/// dead-lettered at once, since retrying cannot help.
pub fn decide(failure: &Failure, previous_attempts: u32, max_attempts: u32) -> Outcome {
    let attempts = previous_attempts.saturating_add(1);
    if !failure.transient {
        return Outcome::DeadLetter {
            attempts,
            reason: failure.reason.clone(),
        };
    }
    if attempts < max_attempts {
        Outcome::Retry { attempts }
    } else {
        Outcome::DeadLetter {
            attempts,
            reason: format!("gave up after {attempts} attempts: {}", failure.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_until_max_attempts() {
        let down = Failure::transient("registry answered 503");
        assert_eq!(decide(&down, 0, 3), Outcome::Retry { attempts: 1 });
        assert_eq!(decide(&down, 1, 3), Outcome::Retry { attempts: 2 });
        assert_eq!(
            decide(&down, 2, 3),
            Outcome::DeadLetter {
                attempts: 3,
                reason: "gave up after 3 attempts: registry answered 503".into()
            }
        );
        // A message replayed past its budget (or with a forged header) still ends.
        assert!(matches!(
            decide(&down, 40, 3),
            Outcome::DeadLetter { attempts: 41, .. }
        ));
        assert!(matches!(
            decide(&down, u32::MAX, 3),
            Outcome::DeadLetter { .. }
        ));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        assert!(matches!(
            decide(&Failure::transient("x"), 0, 1),
            Outcome::DeadLetter { attempts: 1, .. }
        ));
    }

    #[test]
    fn permanent_failures_are_dead_lettered_at_once() {
        let bad = Failure::permanent("bad manifest");
        assert_eq!(
            decide(&bad, 0, 8),
            Outcome::DeadLetter {
                attempts: 1,
                reason: "bad manifest".into()
            }
        );
    }
}
