//! Transparent huge pages, chosen by the tailnet's size.
//!
//! The allocator (mimalloc) asks for huge pages for its arenas. For a large tailnet that saves
//! tens of thousands of page faults per pass (a 14 MB `/status` at 10,000 peers); for a small one
//! it only makes the process resident in 2 MiB steps. Measured side by side (BENCHMARKS.md,
//! "Memory"): at 1,000 peers a `check` without huge pages is faster and needs 40 % less memory;
//! at 10,000 it is slower by a fifth. So huge pages are off below a size and on from there, for
//! the process (`PR_SET_THP_DISABLE` applies to every mapping it faults in afterwards, whoever
//! mapped it). The size differs: `run` holds its known state for hours ([`LARGE_FOR_RUN`]);
//! `check`, which parses `/status` while it arrives and holds only the model, needs a third less
//! memory without huge pages at 10,000 peers and gains nothing from it at 50,000
//! ([`LARGE_FOR_CHECK`]).

/// From this many devices, huge pages pay for themselves in `run`.
pub const LARGE_FOR_RUN: usize = 5_000;
/// From this many devices, huge pages pay for themselves in `check`.
pub const LARGE_FOR_CHECK: usize = 20_000;

/// Fits the process to a tailnet of `devices` devices (as last recorded, or as just read):
/// huge pages from `large` devices (one of the two sizes above).
pub fn fit(devices: usize, large: usize) {
    let disable = libc::c_ulong::from(devices < large);
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of this process; it
    // fails only on kernels without it, where there is nothing to choose.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) };
}

/// The allocator's settings for the daemon: what a full pass frees is given back to the system
/// at once (purged without delay, arenas committed on demand) instead of being kept for the next
/// pass. `run` at 10,000 peers holds about 45 MiB this way instead of 70-150 (BENCHMARKS.md,
/// "Memory of `run`"). mimalloc reads them from the environment when the process starts, and
/// its first arena is reserved before `main`: set from here they reach only part of it (60 MiB
/// measured, not 45). So `run`, started without them, executes itself again once with them set,
/// as the same process (the same PID for systemd). An administrator's own
/// `MIMALLOC_PURGE_DELAY` or `MIMALLOC_ARENA_EAGER_COMMIT` wins. If that fails, they are set
/// from here, for what they still reach. `check` keeps the allocator's defaults: a short process
/// gains nothing from giving memory back, and pays for it in time.
pub fn for_daemon() {
    let missing: Vec<_> = DAEMON_OPTIONS
        .iter()
        .filter(|(_, name)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        std::os::unix::process::CommandExt::arg0(&mut again, arg0);
    }
    again.args(args);
    for (_, name) in &missing {
        again.env(name, "0");
    }
    // Returns only if the process could not be replaced.
    let _ = std::os::unix::process::CommandExt::exec(&mut again);
    for (option, _) in missing {
        // SAFETY: sets one integer option of the allocator, which reads it with atomics.
        unsafe { libmimalloc_sys::mi_option_set(*option, 0) };
    }
}

/// mimalloc's option numbers (`mi_option_e` in its `mimalloc.h`, version 3, which the crate
/// builds) for the settings [`for_daemon`] makes, with the environment variable that sets each.
/// The crate exports no names for them; the unit test reads their defaults back to prove the
/// numbers.
const DAEMON_OPTIONS: [(libmimalloc_sys::mi_option_t, &str); 2] = [
    (4, "MIMALLOC_ARENA_EAGER_COMMIT"),
    (15, "MIMALLOC_PURGE_DELAY"),
];

/// Whether huge pages are off for this process now.
#[cfg(test)]
fn huge_pages_off() -> bool {
    // SAFETY: as above; PR_GET_THP_DISABLE only reads the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_daemon_options_are_the_ones_named() {
        // SAFETY: reads allocator options.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        let [(eager, _), (purge, _)] = super::DAEMON_OPTIONS;
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(get(eager), 2, "arena_eager_commit's default");
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(purge), 1000, "purge_delay's default");
        }
    }

    #[test]
    fn huge_pages_follow_the_size() {
        for large in [super::LARGE_FOR_RUN, super::LARGE_FOR_CHECK] {
            super::fit(large - 1, large);
            assert!(super::huge_pages_off());
            super::fit(large, large);
            assert!(!super::huge_pages_off());
        }
        super::fit(10_000, super::LARGE_FOR_CHECK);
        assert!(
            super::huge_pages_off(),
            "a 10,000-device check goes without"
        );
    }
}
