//! One clock for the whole harness: CLOCK_MONOTONIC in nanoseconds.
//!
//! Senders stamp packets with it and receivers subtract from it, so both
//! ends must read the same clock; deadlines are absolute on the same clock
//! so a late wake-up never shifts the schedule that follows it.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use std::time::Duration;

/// Nanoseconds in one second.
pub const NS_PER_SEC: u64 = 1_000_000_000;
/// Nanoseconds in one millisecond.
pub const NS_PER_MS: u64 = 1_000_000;

/// The current CLOCK_MONOTONIC time in nanoseconds.
pub fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => timespec_to_ns(&ts),
        // CLOCK_MONOTONIC cannot fail on Linux; fall back to a clock that
        // only moves forward rather than returning garbage.
        Err(_) => fallback_ns(),
    }
}

/// The current CLOCK_REALTIME in nanoseconds, the clock of the kernel's
/// receive timestamps (SO_TIMESTAMPNS).
pub fn realtime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|ts| timespec_to_ns(&ts))
        .unwrap_or(0)
}

/// Converts a kernel receive timestamp (CLOCK_REALTIME) to the monotonic
/// clock the senders stamp with: the datagram's age when read, measured on
/// the realtime clock, taken back from the monotonic reading. A realtime
/// step between the two readings shows up as an absurd age; then the read
/// time itself is used.
pub fn arrival_ns(kernel_realtime_ns: u64, now_mono_ns: u64, now_real_ns: u64) -> u64 {
    match now_real_ns.checked_sub(kernel_realtime_ns) {
        Some(age) if age < NS_PER_SEC => now_mono_ns.saturating_sub(age),
        _ => now_mono_ns,
    }
}

fn fallback_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub fn timespec_to_ns(ts: &TimeSpec) -> u64 {
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(NS_PER_SEC).saturating_add(nanos)
}

fn ns_to_timespec(ns: u64) -> TimeSpec {
    TimeSpec::from_duration(Duration::from_nanos(ns))
}

/// Sleeps until the monotonic clock reads at least `deadline_ns`.
///
/// An absolute deadline (TIMER_ABSTIME) keeps pacing exact: the time spent
/// sending before the sleep does not push the next send later.
pub fn sleep_until_ns(deadline_ns: u64) {
    // A signal interrupts the sleep; a few retries cover that without an
    // unbounded loop, and the callers re-check the clock anyway.
    for _ in 0..8 {
        let now = now_ns();
        if now >= deadline_ns {
            return;
        }
        let target = ns_to_timespec(deadline_ns);
        match clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &target,
        ) {
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_nanos(deadline_ns - now));
                return;
            }
        }
    }
}

/// Sleeps until `deadline_ns` in short steps, returning early (false) when
/// `stop` says the run is being cut short.
pub fn sleep_until_or_stop(deadline_ns: u64, stop: &dyn Fn() -> bool) -> bool {
    const STEP_NS: u64 = 50 * NS_PER_MS;
    // Bounded by the distance to the deadline divided by the step.
    loop {
        if stop() {
            return false;
        }
        let now = now_ns();
        if now >= deadline_ns {
            return true;
        }
        sleep_until_ns(deadline_ns.min(now + STEP_NS));
    }
}

/// Asks the kernel to wake this thread close to its deadlines instead of
/// the default 50 µs late, which matters when packets are 20 µs apart.
pub fn tighten_timer_slack() {
    // Failing only costs wake-up precision, which the lag statistics show.
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(a > 0);
    }

    #[test]
    fn sleep_reaches_deadline() {
        let start = now_ns();
        sleep_until_ns(start + 2 * NS_PER_MS);
        assert!(now_ns() >= start + 2 * NS_PER_MS);
    }

    #[test]
    fn kernel_timestamps_map_to_the_monotonic_clock() {
        // Read 300 us after the kernel stamped it.
        assert_eq!(arrival_ns(5_000_000, 90_000_000, 5_300_000), 89_700_000);
        // A timestamp from the future or a second old: the read time.
        assert_eq!(arrival_ns(6_000_000, 90_000_000, 5_300_000), 90_000_000);
        assert_eq!(arrival_ns(1, 90_000_000, 2 * NS_PER_SEC), 90_000_000);
    }

    #[test]
    fn timespec_roundtrip() {
        let ts = ns_to_timespec(3 * NS_PER_SEC + 17);
        assert_eq!(timespec_to_ns(&ts), 3 * NS_PER_SEC + 17);
    }
}
