//! Test seams: hooks the crash and panic tests drive from outside the process.
//!
//! Owns [`pause_point`] (`WARDEN_PAUSE_AT`) and [`ext_selftest`] (`WARDEN_EXT_SELFTEST`).
//! Both exist only with the `testing` cargo feature, which the test command turns on;
//! without it (every release and every build users make) each is an empty `#[inline]`
//! function: no environment lookup, no `SIGSTOP`, no extra SQL function, and the variable
//! names are not in the binary. Does not own what the tests check.

/// A pause point for crash tests: when `WARDEN_PAUSE_AT` is `point` (or `point#N`, the N-th
/// time this process reaches it), the process says so on stderr and stops itself
/// (`SIGSTOP`) so a test can `kill -9` it exactly there. Unset, it costs one cached lookup;
/// without the `testing` feature, nothing.
#[cfg(feature = "testing")]
pub fn pause_point(point: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static AT: std::sync::OnceLock<Option<(String, u32)>> = std::sync::OnceLock::new();
    static HITS: AtomicU32 = AtomicU32::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("WARDEN_PAUSE_AT").ok()?;
        Some(match v.split_once('#') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((name, nth)) = at
        && name == point
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("warden: paused at {point} (pid {})", std::process::id());
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// Without the `testing` feature: nothing at all.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn pause_point(_point: &str) {}

/// True when the loadable extension should install `warden_selftest_panic()`, a function
/// that panics, for the test that a panic in a callback becomes an SQL error and never
/// takes the host down. `WARDEN_EXT_SELFTEST=1`, and only with the `testing` feature.
#[cfg(feature = "testing")]
pub fn ext_selftest() -> bool {
    std::env::var("WARDEN_EXT_SELFTEST").is_ok_and(|v| v == "1")
}

/// Without the `testing` feature: never.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn ext_selftest() -> bool {
    false
}
