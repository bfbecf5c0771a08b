//! Rise and fall: how consecutive probe results become a verdict.

use crate::service::HealthState;

/// One endpoint's verdict and the run of results that may change it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    state: HealthState,
    /// Consecutive results against the current verdict (failures while up
    /// or unknown, successes while down).
    run: u32,
}

impl Tracker {
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Takes one probe result; the new verdict if it changed.
    ///
    /// - unknown: the first success is `up` (a healthy endpoint is known
    ///   healthy at once); it takes `fall` failures in a row to be `down`,
    ///   as from `up`, so two instances that start at different times
    ///   reach the same verdicts on a flaky endpoint;
    /// - up: `fall` failures in a row make it `down`;
    /// - down: `rise` successes in a row make it `up`.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<HealthState> {
        use HealthState::*;
        let next = match (self.state, ok) {
            (Unknown, true) => Some(Up),
            (Up, true) | (Down, false) => {
                self.run = 0;
                None
            }
            (Unknown | Up, false) => {
                self.run += 1;
                (self.run >= fall).then_some(Down)
            }
            (Down, true) => {
                self.run += 1;
                (self.run >= rise).then_some(Up)
            }
        };
        if let Some(s) = next {
            self.state = s;
            self.run = 0;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    fn run(results: &str, rise: u32, fall: u32) -> Vec<(usize, HealthState)> {
        let mut t = Tracker::default();
        results
            .chars()
            .enumerate()
            .filter_map(|(i, c)| t.record(c == '+', rise, fall).map(|s| (i, s)))
            .collect()
    }

    #[test]
    fn verdicts_change_after_rise_or_fall_results_in_a_row() {
        // First success: up at once.
        assert_eq!(run("+", 2, 3), [(0, Up)]);
        // Unknown needs `fall` failures too.
        assert_eq!(run("--", 2, 3), []);
        assert_eq!(run("---", 2, 3), [(2, Down)]);
        // Up: a failure run broken by a success starts over.
        assert_eq!(run("+--+--", 2, 3), [(0, Up)]);
        assert_eq!(run("+---", 2, 3), [(0, Up), (3, Down)]);
        // Down: `rise` successes in a row; a failure starts over.
        assert_eq!(run("+---+-++", 2, 3), [(0, Up), (3, Down), (7, Up)]);
        assert_eq!(run("---+", 1, 3), [(2, Down), (3, Up)]);
        assert_eq!(run("-", 1, 1), [(0, Down)]);
    }
}
