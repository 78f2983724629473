//! Benchmarks that drive the monitor as a process, beside the shell scripts that run them
//! (`bench/*.sh`): each is an `#[ignore]`d test named `bench_*`, so that the suite builds them
//! and `tests/run-all.sh` skips them. They share the integration tests' harness, of which each
//! uses only a part.

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

mod control_memory;
mod cost;
mod latency;
mod measure;
mod presence;
mod storm;
mod web;
