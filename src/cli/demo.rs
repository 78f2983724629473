//! `demo`: the pipeline against the built-in simulated tailnet.

use std::path::Path;

use anyhow::Context as _;

use crate::cli::pass;
use crate::config::Config;
use crate::notify::render;
use crate::source::{sim, Source};
use crate::store::Store;

pub(super) async fn demo(explicit: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = match explicit {
        Some(p) => Config::load(p)?,
        None => Config::defaults(),
    };
    // The simulated tailnet must never decide what this server's kernel lets in.
    cfg.guard = crate::config::GuardConfig::default();
    cfg.policy.guard = None;
    let channels = &cfg.channels;
    // mkdtemp: an unpredictable name, created 0700 by this process (F6: never a directory another
    // user could have made first, with a `state.db` link in it).
    let tmp = tempfile::Builder::new()
        .prefix("tailscale-monitor-demo-")
        .tempdir()
        .context("demo state directory")?;
    let dir = tmp.path().join("state");
    let result = async {
        let mut store = Store::open(&dir).context("demo state")?;
        let steps = sim::demo_steps();
        let sim = sim::Sim::new(steps[0].1.clone());
        let source = Source::Sim(sim);
        let host = "web-01 (demo)";
        println!("tailscale-monitor demo: a simulated tailnet, the real pipeline.\n");
        for (i, (title, snap)) in steps.into_iter().enumerate() {
            if let Source::Sim(s) = &source {
                s.set(snap);
            }
            let plan = pass::Plan::default();
            let report = pass::pass(&source, &mut store, &cfg, &plan, &mut None)
                .await?
                .report;
            println!("=== Step {}: {title}", i + 1);
            let mut text = String::new();
            for e in &report.events {
                render::event_text(&mut text, e);
            }
            println!("{}", text.trim_start_matches('\n'));
            if !channels.is_empty() {
                let d = pass::deliver(&mut store, &cfg, host, true).await?;
                for (c, e) in &d.failed {
                    println!("  (channel {c} failed: {e})");
                }
                if d.delivered > 0 {
                    println!("  (sent through {} channel(s))", channels.len() - d.failed.len());
                }
            }
            println!();
        }
        if channels.is_empty() {
            println!(
                "To receive these by e-mail, write a config (see README) and run:\n  tailscale-monitor --config /etc/tailscale-monitor/config.toml demo"
            );
        }
        anyhow::Ok(())
    }
    .await;
    drop(tmp);
    result
}
