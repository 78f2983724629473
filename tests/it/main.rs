//! The integration tests, one binary (one link): each module a feature, `support` the harness
//! (the monitor as a process, the emulators, the real servers). Tests that need a real server
//! are `#[ignore]`d with the reason and run by `tests/run-all.sh`; see tests/README.md.

mod support;

mod access;
mod alertmanager;
mod audit;
mod channels;
mod control;
mod deb;
mod delivery;
mod emulator;
mod export;
mod guard;
mod guard_doors;
mod hostile;
mod mail;
mod outage;
mod posture;
mod presence;
mod real;
mod reload;
mod storm;
mod stream;
mod web;
