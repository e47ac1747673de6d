//! When the server started and when it began to listen, which `/__stats` reports so that a
//! benchmark timing a cold start from outside can subtract the replica's own start from it.
//!
//! The start is the first instant of `main`, before the runtime is built and the options are
//! read; what happens before `main` (the `exec` and the dynamic loader) is not in it, and a
//! caller that spawns the process itself can measure that from outside. The time to listening
//! is taken on the monotonic clock; the wall-clock instants are for comparing with another
//! process's clock on the same machine.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The start of the process, taken as early as `main` can.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    monotonic: Instant,
}

impl Clock {
    /// Now: call it first thing in `main`.
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    /// The server listens now.
    pub fn listening(self) -> Startup {
        Startup {
            started: self.wall,
            to_listening: self.monotonic.elapsed(),
        }
    }
}

/// How the server started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    /// Wall-clock time at the start of `main`.
    pub started: SystemTime,
    /// From the start of `main` to a bound listening socket, startup delay included.
    pub to_listening: Duration,
}

impl Startup {
    /// Wall-clock time at which the server listened.
    pub fn listening_at(&self) -> SystemTime {
        self.started + self.to_listening
    }

    /// The `startup` object of `/__stats`: microseconds since the Unix epoch for the two
    /// instants, and their difference as measured on the monotonic clock.
    pub fn to_json(&self) -> Value {
        let started = unix_micros(self.started);
        // Whole microseconds added, so that the three numbers agree exactly.
        let to_listening = self.to_listening.as_micros() as u64;
        json!({
            "started_unix_us": started,
            "listening_unix_us": started + to_listening,
            "start_to_listening_us": to_listening,
        })
    }
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_is_the_start_plus_the_time_to_listen() {
        let startup = Startup {
            started: UNIX_EPOCH + Duration::from_micros(1_000_000),
            to_listening: Duration::from_micros(2_500),
        };
        assert_eq!(
            startup.to_json(),
            json!({
                "started_unix_us": 1_000_000,
                "listening_unix_us": 1_002_500,
                "start_to_listening_us": 2_500,
            })
        );
    }
}
