//! How far a sweep has come: the projects it will check and those done, for
//! the command line's progress bar, the daemon's `STATUS=` line and the
//! status page. The sweep counts; whoever shows it reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    started: Mutex<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Mutex::new(Instant::now()),
        }
    }
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub done: u64,
    pub total: u64,
    /// Projects a second since the sweep's checks began.
    pub rate: f64,
    /// At that rate, until the last project is checked.
    pub left: Option<Duration>,
}

impl Progress {
    /// The checks begin: `total` projects to go.
    pub fn start(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        *self.started.lock().expect("progress lock") = Instant::now();
    }

    /// One more project checked (or not started, the sweep being cut short).
    pub fn advance(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> Reading {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let elapsed = self.started.lock().expect("progress lock").elapsed();
        reading(done, total, elapsed)
    }
}

fn reading(done: u64, total: u64, elapsed: Duration) -> Reading {
    let rate = if elapsed.as_secs_f64() > 0.0 {
        done as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    let left = (rate > 0.0 && done > 0)
        .then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate));
    Reading {
        done,
        total,
        rate,
        left,
    }
}

impl std::fmt::Display for Reading {
    /// `1,234 of 100,000 projects (1%), 312/s, about 5 min left`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = (100 * self.done).checked_div(self.total).unwrap_or(100);
        write!(
            f,
            "{} of {} projects ({share}%), {:.0}/s",
            self.done, self.total, self.rate
        )?;
        match self.left {
            Some(left) if self.done < self.total => {
                write!(f, ", about {} left", human(left))
            }
            _ => Ok(()),
        }
    }
}

/// A duration as people say it: `40 s`, `5 min`, `2 h 5 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_says_how_far_how_fast_and_how_long() {
        let r = reading(1234, 100_000, Duration::from_secs(4));
        assert_eq!(
            r.to_string(),
            "1234 of 100000 projects (1%), 308/s, about 5 min left"
        );
        let done = reading(10, 10, Duration::from_secs(2));
        assert_eq!(done.to_string(), "10 of 10 projects (100%), 5/s");
        let none = reading(0, 0, Duration::ZERO);
        assert_eq!((none.rate, none.left), (0.0, None));
        assert_eq!(none.to_string(), "0 of 0 projects (100%), 0/s");
        assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
    }
}
