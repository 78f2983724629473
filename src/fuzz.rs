//! Fuzz-style property tests of every parser fed by the outside (status, bus lines, the netmap,
//! `tka/status`, `prefs`, the relay's answer, the Admin API, the Headscale API, the webhook
//! header, the policy text): generated inputs, from real documents mutated in the ways hostile or
//! broken peers do, must never panic and must stay within a time bound.
//!
//! Deterministic (a fixed seed), so a failure reproduces. The normal suite runs
//! [`DEFAULT_CASES`] inputs per parser; `TM_FUZZ_CASES=N` runs more (`bench/fuzz.sh`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per parser in the normal suite.
pub const DEFAULT_CASES: usize = 1000;
/// The longest one parse may take (debug build, a loaded CI machine): a linear parser of the
/// largest generated input (a few MB) takes milliseconds; what this catches is super-linear work.
const TIME_BOUND: Duration = Duration::from_secs(3);

pub(crate) fn cases() -> usize {
    std::env::var("TM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One mutation of `seed`: flipped bytes, a cut, a repeated slice, deep nesting, a huge number, a
/// long string, control and invalid UTF-8 bytes, or a value replaced by another type.
pub fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let at = |rng: &mut StdRng, v: &Vec<u8>| rng.gen_range(0..=v.len());
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..9) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            1 => {
                let i = at(rng, &v);
                v.truncate(i);
            }
            2 if !v.is_empty() => {
                let a = rng.gen_range(0..v.len());
                let b = rng.gen_range(a..=v.len().min(a + 4096));
                let piece = v[a..b].to_vec();
                let i = at(rng, &v);
                for _ in 0..rng.gen_range(1..20) {
                    v.splice(i..i, piece.iter().copied());
                }
            }
            3 => {
                let depth = rng.gen_range(100..20_000);
                let open = if rng.gen() { b'[' } else { b'{' };
                let i = at(rng, &v);
                v.splice(i..i, std::iter::repeat_n(open, depth));
            }
            4 => {
                let i = at(rng, &v);
                v.splice(i..i, b"18446744073709551615999e99999".iter().copied());
            }
            5 => {
                let i = at(rng, &v);
                let n = rng.gen_range(1..(256 << 10));
                v.splice(i..i, std::iter::repeat_n(b'a', n));
            }
            6 => {
                let i = at(rng, &v);
                v.splice(
                    i..i,
                    [0x1b, b'[', b'2', b'J', 0, 0xff, 0xfe, b'\n', b'\r', 0xc0],
                );
            }
            7 => {
                let i = at(rng, &v);
                let other: &[u8] =
                    [&b"null"[..], b"[]", b"{}", b"\"x\"", b"-1", b"true"][rng.gen_range(0..6)];
                v.splice(i..i, other.iter().copied());
            }
            _ => v.reverse(),
        }
    }
    v
}

/// Runs `parse` on the seeds and on generated mutations of them; fails on a panic (the test
/// harness reports it) or on a parse slower than [`TIME_BOUND`].
pub fn check(name: &str, seeds: &[&[u8]], parse: impl Fn(&[u8])) {
    let mut rng = StdRng::seed_from_u64(0x7a11_5ca1e);
    let n = cases();
    for i in 0..n {
        let seed = seeds[i % seeds.len()];
        let input = if i < seeds.len() {
            seed.to_vec()
        } else {
            mutate(&mut rng, seed)
        };
        let start = Instant::now();
        parse(&input);
        let took = start.elapsed();
        assert!(
            took < TIME_BOUND,
            "{name}: case {i} ({} bytes) took {took:?}",
            input.len()
        );
    }
}
