//! A built-in simulated tailnet for `demo`: the real status document of a small tailnet, then a
//! scripted series of changes. It goes through the same parser and core as a real daemon.

use std::sync::Mutex;

use chrono::Utc;

use super::status_json::Status;
use super::SourceError;
use crate::model::{Device, NodeKey, Snapshot, StableNodeId};

const TAILNET: &str = include_str!("../../tests/fixtures/status-running.json");

/// A source that returns whatever snapshot it was last given.
pub struct Sim {
    current: Mutex<Box<Snapshot>>,
}

impl Sim {
    pub fn new(snapshot: Snapshot) -> Sim {
        Sim {
            current: Mutex::new(Box::new(snapshot)),
        }
    }

    pub fn set(&self, snapshot: Snapshot) {
        **self.current.lock().expect("sim lock") = snapshot;
    }

    pub fn status(&self) -> Result<Snapshot, SourceError> {
        let mut s = *self.current.lock().expect("sim lock").clone();
        s.taken_at = Utc::now();
        Ok(s)
    }
}

/// The demo script: a title for each step and the tailnet after it.
pub fn demo_steps() -> Vec<(&'static str, Snapshot)> {
    let base = Status::parse(TAILNET.as_bytes())
        .and_then(|s| s.into_snapshot(Utc::now()))
        .expect("embedded demo tailnet parses");
    let mut steps = vec![("A first look at the tailnet (baseline)", base.clone())];

    let mut joined = base.clone();
    let template = joined
        .devices
        .values()
        .find(|d| d.hostname == "alice-phone")
        .cloned()
        .expect("demo tailnet has alice-phone");
    let tablet = Device {
        id: StableNodeId("n00005D77CNTRL".into()),
        node_id: Some(1042),
        node_key: NodeKey(
            "nodekey:00000000000000000000000000000000000000000000000000009f3a0000d00d".into(),
        ),
        hostname: "unknown-tablet".into(),
        dns_name: "unknown-tablet.tail1a2b3c.ts.net.".into(),
        os: "android".into(),
        addresses: vec!["100.101.1.42".into(), "fd7a:115c:a1e0::42".into()],
        created: Some(Utc::now()),
        ..template
    };
    joined.devices.insert(tablet.id.clone(), tablet);
    steps.push(("A new device joins", joined.clone()));

    let mut rekeyed = joined.clone();
    if let Some(d) = rekeyed
        .devices
        .values_mut()
        .find(|d| d.hostname == "bob-desktop")
    {
        d.node_key = NodeKey(
            "nodekey:00000000000000000000000000000000000000000000000000009f3a0000beef".into(),
        );
    }
    steps.push(("A device re-authenticates with a new key", rekeyed.clone()));

    let mut exit = rekeyed;
    if let Some(d) = exit.devices.values_mut().find(|d| d.hostname == "nas") {
        d.routes.extend(["0.0.0.0/0".to_owned(), "::/0".to_owned()]);
        d.routes.sort();
        d.exit_node = true;
    }
    steps.push(("A device starts offering an exit node", exit));
    steps
}
