//! The re-registration hint: a new device that looks like a known one.

use std::collections::{BTreeSet, HashMap};

use crate::model::state::{Known, KnownDevice};
use crate::model::{Device, StableNodeId};

/// Known devices by hostname and by address, to explain when a new device looks like an old one
/// (the re-registration the old script missed).
pub(super) struct Lookalikes<'a> {
    known: &'a Known,
    by_host: HashMap<&'a str, Vec<&'a StableNodeId>>,
    by_addr: HashMap<&'a str, Vec<&'a StableNodeId>>,
}

impl<'a> Lookalikes<'a> {
    pub(super) fn new(known: &'a Known) -> Self {
        let mut by_host: HashMap<&str, Vec<&StableNodeId>> = HashMap::new();
        let mut by_addr: HashMap<&str, Vec<&StableNodeId>> = HashMap::new();
        for (id, k) in &known.devices {
            if !k.device.hostname.is_empty() {
                by_host.entry(&k.device.hostname).or_default().push(id);
            }
            for a in &k.device.addresses {
                by_addr.entry(a).or_default().push(id);
            }
        }
        Lookalikes {
            known,
            by_host,
            by_addr,
        }
    }

    pub(super) fn hint(&self, dev: &Device) -> String {
        let mut ids: BTreeSet<&StableNodeId> = BTreeSet::new();
        if !dev.hostname.is_empty() {
            ids.extend(
                self.by_host
                    .get(dev.hostname.as_str())
                    .into_iter()
                    .flatten(),
            );
        }
        for a in &dev.addresses {
            ids.extend(self.by_addr.get(a.as_str()).into_iter().flatten());
        }
        reregistration_hint(ids.into_iter().map(|id| &self.known.devices[id]))
    }
}

/// The hint for a new device, given the known devices that share its hostname or an address.
pub(super) fn reregistration_hint<'a>(similar: impl Iterator<Item = &'a KnownDevice>) -> String {
    let similar: Vec<String> = similar
        .map(|k| {
            format!(
                "{} ({}{})",
                k.device.display_name(),
                k.device.id,
                if k.removed { ", removed" } else { "" }
            )
        })
        .collect();
    if similar.is_empty() {
        String::new()
    } else {
        format!(
            "Same hostname or address as previously known device {}: a re-registration with a new \
             identity. Confirm it was re-added on purpose.",
            similar.join(", ")
        )
    }
}
