//! Transparent huge pages, chosen by the tailnet's size.
//!
//! The allocator (mimalloc) asks for huge pages for its arenas. For a large tailnet that saves
//! tens of thousands of page faults per pass (a 14 MB `/status` at 10,000 peers); for a small one
//! it only makes the process resident in 2 MiB steps. Measured side by side (BENCHMARKS.md,
//! "Memory"): at 1,000 peers a `check` without huge pages is faster and needs 40 % less memory;
//! at 10,000 it is slower by a fifth. So huge pages are off below [`LARGE_TAILNET`] devices and
//! on from there, for the process (`PR_SET_THP_DISABLE` applies to every mapping it faults in
//! afterwards, whoever mapped it).

/// From this many devices, huge pages pay for themselves.
pub const LARGE_TAILNET: usize = 5_000;

/// Fits the process to a tailnet of `devices` devices (as last recorded, or as just read).
pub fn fit(devices: usize) {
    let disable = libc::c_ulong::from(devices < LARGE_TAILNET);
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
        super::fit(10);
        assert!(super::huge_pages_off());
        super::fit(super::LARGE_TAILNET);
        assert!(!super::huge_pages_off());
    }
}
