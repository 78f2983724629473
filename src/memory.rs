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

/// Whether huge pages are off for this process now.
#[cfg(test)]
fn huge_pages_off() -> bool {
    // SAFETY: as above; PR_GET_THP_DISABLE only reads the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
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
