//! The re-registration hint: a new device that looks like a known one.

use std::collections::{BTreeSet, HashMap};

use crate::model::state::{Known, KnownDevice};
use crate::model::{Device, StableNodeId};

/// Known devices by hostname and by address, to explain when a new device looks like an old one
/// (the re-registration the old script missed). The first few new devices are compared with each
/// known device in one walk (a join decided from the bus is one device: no index of the whole
/// tailnet for it); from [`SCANS`] on, an index built once answers the rest of the pass.
pub(super) struct Lookalikes<'a> {
    known: &'a Known,
    scans: usize,
    index: Option<Index<'a>>,
}

/// New devices compared by a walk before the index is built.
const SCANS: usize = 4;

struct Index<'a> {
    by_host: HashMap<&'a str, Vec<&'a StableNodeId>>,
    by_addr: HashMap<&'a str, Vec<&'a StableNodeId>>,
}

impl<'a> Lookalikes<'a> {
    pub(super) fn new(known: &'a Known) -> Self {
        Lookalikes {
            known,
            scans: 0,
            index: None,
        }
    }

    fn index(known: &'a Known) -> Index<'a> {
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
        Index { by_host, by_addr }
    }

    pub(super) fn hint(&mut self, dev: &Device) -> String {
        let same_host = |d: &Device| !dev.hostname.is_empty() && d.hostname == dev.hostname;
        let same_addr = |d: &Device| d.addresses.iter().any(|a| dev.addresses.contains(a));
        if self.index.is_none() && self.scans < SCANS {
            self.scans += 1;
            return reregistration_hint(
                self.known
                    .devices
                    .values()
                    .filter(|k| same_host(&k.device) || same_addr(&k.device)),
            );
        }
        let index = self.index.get_or_insert_with(|| Self::index(self.known));
        let mut ids: BTreeSet<&StableNodeId> = BTreeSet::new();
        if !dev.hostname.is_empty() {
            ids.extend(
                index
                    .by_host
                    .get(dev.hostname.as_str())
                    .into_iter()
                    .flatten(),
            );
        }
        for a in &dev.addresses {
            ids.extend(index.by_addr.get(a.as_str()).into_iter().flatten());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::KnownDevice;

    /// The walk (the first few new devices) and the index (the rest) name the same devices, in
    /// the same order.
    #[test]
    fn the_walk_and_the_index_give_the_same_hint() {
        let mut known = Known::default();
        for (id, host, ip) in [
            ("n3", "web", "100.64.0.3"),
            ("n1", "web", "100.64.0.1"),
            ("n2", "db", "100.64.0.9"),
            ("n4", "", "100.64.0.4"),
        ] {
            let mut d = Device::for_tests(id);
            d.hostname = host.into();
            d.addresses = vec![ip.into()];
            known.devices.insert(
                d.id.clone(),
                KnownDevice {
                    device: d,
                    removed: id == "n3",
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: true,
                },
            );
        }
        let mut new = Device::for_tests("x");
        new.hostname = "web".into();
        new.addresses = vec!["100.64.0.9".into()];
        let mut nameless = Device::for_tests("y");
        nameless.hostname = String::new();
        nameless.addresses = vec!["100.64.0.4".into()];
        let mut l = Lookalikes::new(&known);
        let hints: Vec<(String, String)> = (0..2 * SCANS)
            .map(|_| (l.hint(&new), l.hint(&nameless)))
            .collect();
        assert!(l.index.is_some(), "the index took over");
        assert!(hints.windows(2).all(|w| w[0] == w[1]), "{hints:?}");
        assert!(
            hints[0].0.contains("web (n1), db (n2), web (n3, removed)"),
            "{}",
            hints[0].0
        );
        assert!(hints[0].1.contains("(n4)"), "{}", hints[0].1);
    }
}
