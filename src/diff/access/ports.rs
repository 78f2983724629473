//! Port ranges: merged, and one set minus another.

/// Sorts and merges overlapping or adjacent ranges.
pub(super) fn merge(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `a` minus `b`, both merged.
pub(super) fn subtract(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo - 1));
            }
            if bhi >= hi {
                done = true;
                break;
            }
            lo = bhi + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}
