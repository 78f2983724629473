//! The guard's nftables table, as the root side writes and reads it: documents of nftables'
//! JSON interface (`nft -j`, libnftables-json(5)) built from validated values only, never rule
//! text. One table of the monitor's own (`inet tailscale_monitor_guard`), so that nothing else's
//! rules are touched and `guard off` is one `delete table`.
//!
//! ```text
//! table inet tailscale_monitor_guard {
//!   set approved4 { type ipv4_addr; flags interval }   set approved6 { type ipv6_addr; flags interval }
//!   set seen4 { type ipv4_addr . inet_proto . inet_service; flags dynamic,timeout; timeout 1h; size 16384; counter }
//!   set seen6 { … ipv6_addr … }
//!   chain input   { type filter hook input   priority -10; policy accept; RULES }
//!   chain forward { type filter hook forward priority -10; policy accept; RULES }
//! }
//! RULES (default-deny on the interface):
//!   iifname IF ct direction reply accept          # this server's own connections (MagicDNS too)
//!   iifname IF ct state related accept            # their ICMP errors
//!   iifname IF ip saddr @approved4 accept
//!   iifname IF ip6 saddr @approved6 accept
//!   iifname IF meta nfproto ipv4 meta l4proto { tcp, udp } add @seen4 { ip saddr . meta l4proto . th dport }
//!   iifname IF meta nfproto ipv4 meta l4proto != { tcp, udp } add @seen4 { ip saddr . meta l4proto . 0 }
//!   (the same two for ipv6 and @seen6)
//!   iifname IF drop
//! ```
//!
//! No source range decides whether a packet is judged: a source outside the tailnet's ranges (a
//! subnet route, a headscale that hands out other prefixes) is dropped unless it is in an
//! approved set. A connection an approved device opened stays in the original direction, so a
//! revocation cuts it at its next packet. Priority -10 runs before tailscaled's own chains
//! (priority 0), which accept everything on its interface. The drop is a rule of its own: a full
//! `seen` set only stops the record, never the drop. Every apply is one transaction (the sets
//! are flushed and refilled, the rules rewritten), so a packet sees the old set or the new one,
//! never none; the `seen` sets and their counters survive it.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use ipnet::IpNet;

use crate::model::guard::{Blocked, GuardSet, MAX_ADDRESSES};

pub const TABLE: &str = "tailscale_monitor_guard";
/// How long a dropped source stays in a `seen` set after its last packet.
const SEEN_TIMEOUT_S: u64 = 3600;
/// The most sources recorded per family: reading a full set back (`nft -j list set`, parsed)
/// stays far inside the relay unit's `MemoryMax` (BENCHMARKS.md), and no apply or revoke ever
/// reads it (they list the table tersely).
pub const SEEN_SIZE: u64 = 4096;
/// Each source may add this many records at once, then one a second (`meter4`/`meter6`): one
/// scanner cannot fill the record alone.
const METER_BURST: u64 = 120;
const METER_RATE_PER_MINUTE: u64 = 60;
/// Where Debian (and most systems) install `nft`; never looked up in a `PATH`.
const NFT: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];
const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `nft -j list table` output read (16,384 seen elements per family is about 5 MB).
const MAX_LIST: usize = 24 << 20;

/// Checks what the monitor asked for: an interface name, and at most [`MAX_ADDRESSES`] prefixes
/// per family, none of them a default route (which would let every source in) and none inside
/// another (nftables refuses overlapping intervals).
pub fn validate(interface: &str, set: &GuardSet) -> Result<(), String> {
    if !crate::model::guard::valid_interface(interface) {
        return Err("the interface is not a valid interface name".into());
    }
    if set.v4.len() > MAX_ADDRESSES || set.v6.len() > MAX_ADDRESSES {
        return Err(format!("more than {MAX_ADDRESSES} prefixes in a family"));
    }
    if let Some(n) = set.nets().find(|n| n.prefix_len() == 0) {
        return Err(format!("{n} would let every source in"));
    }
    if let Some(n) = set.nets().find(|n| n.trunc() != *n) {
        return Err(format!("{n} has host bits set"));
    }
    let nets: Vec<IpNet> = set.nets().collect();
    for (i, a) in nets.iter().enumerate() {
        if let Some(b) = nets[i + 1..]
            .iter()
            .find(|b| a.contains(*b) || b.contains(a))
        {
            return Err(format!("{a} and {b} overlap"));
        }
    }
    Ok(())
}

fn t() -> Value {
    json!({"family": "inet", "table": TABLE})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn rules(chain: &str, interface: &str) -> Vec<Value> {
    let on =
        json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": interface}});
    let rule = |mut expr: Vec<Value>| {
        expr.insert(0, on.clone());
        json!({"add": {"rule": with(t(), json!({"chain": chain, "expr": expr}))}})
    };
    let mut out = vec![
        rule(vec![
            json!({"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}}),
            json!({"accept": null}),
        ]),
        rule(vec![
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "related"}}),
            json!({"accept": null}),
        ]),
    ];
    for (proto, approved) in [("ip", "@approved4"), ("ip6", "@approved6")] {
        let saddr = json!({"payload": {"protocol": proto, "field": "saddr"}});
        out.push(rule(vec![
            json!({"match": {"op": "==", "left": saddr, "right": approved}}),
            json!({"accept": null}),
        ]));
    }
    for (proto, family, seen, meter) in [
        ("ip", "ipv4", "@seen4", "@meter4"),
        ("ip6", "ipv6", "@seen6", "@meter6"),
    ] {
        let saddr = json!({"payload": {"protocol": proto, "field": "saddr"}});
        let fam =
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": family}});
        let l4 = json!({"meta": {"key": "l4proto"}});
        let ported = json!({"set": ["tcp", "udp"]});
        let meter = json!({"set": {"op": "add", "set": meter, "elem": saddr, "stmt": [
            {"limit": {"rate": METER_RATE_PER_MINUTE, "burst": METER_BURST, "per": "minute"}}
        ]}});
        out.push(rule(vec![
            fam.clone(),
            json!({"match": {"op": "==", "left": l4, "right": ported}}),
            meter.clone(),
            json!({"set": {"op": "add", "set": seen, "elem": {"concat": [
                saddr, l4, {"payload": {"protocol": "th", "field": "dport"}}
            ]}}}),
        ]));
        out.push(rule(vec![
            fam,
            json!({"match": {"op": "!=", "left": l4, "right": ported}}),
            meter,
            json!({"set": {"op": "add", "set": seen, "elem": {"concat": [saddr, l4, 0]}}}),
        ]));
    }
    out.push(rule(vec![json!({"drop": null})]));
    out
}

/// One element of an interval set: an address for a host prefix, else the prefix.
fn element(n: &IpNet) -> Value {
    if n.prefix_len() == n.max_prefix_len() {
        json!(n.addr().to_string())
    } else {
        json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
    }
}

/// The one transaction that puts `set` in force on `interface`. The `seen` sets are created
/// only where `existing` lacks them (the kernel marks them dynamic, and an `add` that does not
/// say so would be refused), so their elements and counters survive. A table of an earlier
/// layout (approved sets of single addresses, `existing` has `approved4` but not
/// `approved4:interval`) is replaced in the same transaction.
pub fn apply_document(interface: &str, set: &GuardSet, existing: &[String]) -> Value {
    let mut cmds = vec![json!({"metainfo": {"json_schema_version": 1}})];
    let old_layout = existing.iter().any(|e| e == "approved4")
        && !(existing.iter().any(|e| e == "approved4:interval")
            && existing.iter().any(|e| e == "meter4"));
    let existing: &[String] = if old_layout {
        cmds.push(json!({"delete": {"table": {"family": "inet", "name": TABLE}}}));
        &[]
    } else {
        existing
    };
    cmds.push(json!({"add": {"table": {"family": "inet", "name": TABLE}}}));
    for (name, ty) in [
        ("approved4", json!("ipv4_addr")),
        ("approved6", json!("ipv6_addr")),
    ] {
        cmds.push(json!({"add": {"set": with(t(), json!({"name": name, "type": ty, "flags": ["interval"]}))}}));
    }
    for (name, addr) in [("meter4", "ipv4_addr"), ("meter6", "ipv6_addr")] {
        if existing.iter().any(|e| e == name) {
            continue;
        }
        cmds.push(json!({"add": {"set": with(t(), json!({
            "name": name,
            "type": addr,
            "flags": ["timeout"],
            "timeout": 60,
            "size": SEEN_SIZE,
        }))}}));
    }
    for (name, addr) in [("seen4", "ipv4_addr"), ("seen6", "ipv6_addr")] {
        if existing.iter().any(|e| e == name) {
            continue;
        }
        cmds.push(json!({"add": {"set": with(t(), json!({
            "name": name,
            "type": [addr, "inet_proto", "inet_service"],
            "flags": ["timeout"],
            "timeout": SEEN_TIMEOUT_S,
            "size": SEEN_SIZE,
            "stmt": [{"counter": null}],
        }))}}));
    }
    for hook in ["input", "forward"] {
        cmds.push(json!({"add": {"chain": with(t(), json!({
            "name": hook, "type": "filter", "hook": hook, "prio": -10, "policy": "accept"
        }))}}));
        cmds.push(json!({"flush": {"chain": with(t(), json!({"name": hook}))}}));
        cmds.extend(rules(hook, interface));
    }
    let v4: Vec<Value> = set.v4.iter().map(|n| element(&IpNet::V4(*n))).collect();
    let v6: Vec<Value> = set.v6.iter().map(|n| element(&IpNet::V6(*n))).collect();
    for (name, elems) in [("approved4", v4), ("approved6", v6)] {
        cmds.push(json!({"flush": {"set": with(t(), json!({"name": name}))}}));
        if !elems.is_empty() {
            cmds.push(json!({"add": {"element": with(t(), json!({"name": name, "elem": elems}))}}));
        }
    }
    json!({ "nftables": cmds })
}

/// The transaction that removes the table, whether or not it exists.
pub fn remove_document() -> Value {
    json!({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": "inet", "name": TABLE}}},
        {"delete": {"table": {"family": "inet", "name": TABLE}}},
    ]})
}

fn nft_path() -> Result<&'static str, String> {
    NFT.into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| "nft is not installed (Debian: apt install nftables)".to_owned())
}

/// Runs `nft -j` with `args`, `input` on its standard input, in an empty environment.
async fn nft(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new(nft_path()?);
    cmd.arg("-j")
        .args(args)
        .env_clear()
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("running nft: {e}"))?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        stdin
            .write_all(input)
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("nft did not finish within {NFT_TIMEOUT:?}"))?
        .map_err(|e| format!("running nft: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "nft failed ({}): {}",
            out.status,
            crate::sanitize::line(err.trim(), 300)
        ));
    }
    if out.stdout.len() > MAX_LIST {
        return Err(format!("nft printed more than {MAX_LIST} bytes"));
    }
    Ok(out.stdout)
}

/// Puts `set` in force on `interface` and returns the table as it now stands (terse and
/// normalized, [`normalize`]): what later reads are checked against.
pub async fn apply(interface: &str, set: &GuardSet) -> Result<Value, String> {
    validate(interface, set)?;
    let existing = match nft(&["-t", "list", "table", "inet", TABLE], None).await {
        Ok(out) => set_names(&out),
        Err(e) if e.contains("No such file or directory") => Vec::new(),
        Err(e) => return Err(e),
    };
    let doc = apply_document(interface, set, &existing).to_string();
    nft(&["-f", "-"], Some(doc.as_bytes())).await?;
    match listed().await? {
        Some(l) => Ok(l.structure),
        None => Err("the table is not there after it was applied".into()),
    }
}

pub async fn remove() -> Result<(), String> {
    let doc = remove_document().to_string();
    nft(&["-f", "-"], Some(doc.as_bytes())).await.map(|_| ())
}

/// Whether the table exists.
pub async fn exists() -> Result<bool, String> {
    match nft(&["-t", "list", "table", "inet", TABLE], None).await {
        Ok(_) => Ok(true),
        Err(e) if e.contains("No such file or directory") => Ok(false),
        Err(e) => Err(e),
    }
}

/// The table as one `nft -j list table` shows it, read in one pass: its structure (as
/// [`structure`] gives it), the approved sets, and the records.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub structure: Value,
    pub set: GuardSet,
    pub blocked: Vec<Blocked>,
}

/// One `nft -j list table` (`None`: no table), parsed in one pass without a JSON tree of the
/// records (each `seen` element is read straight into a [`Blocked`]): the 2 s read costs one
/// `nft` run, and a full record stays cheap to read.
pub async fn listed() -> Result<Option<Listed>, String> {
    match nft(&["list", "table", "inet", TABLE], None).await {
        Ok(out) => parse_listed(&out).map(Some),
        Err(e) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses a full listing into what [`structure`], [`approved`] and [`blocked`] give together.
pub fn parse_listed(out: &[u8]) -> Result<Listed, String> {
    use serde::Deserialize;
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        nftables: Vec<Item<'a>>,
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow, default)]
        set: Option<SetItem<'a>>,
        #[serde(flatten)]
        rest: serde_json::Map<String, Value>,
    }
    #[derive(Deserialize)]
    struct SetItem<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow, default)]
        elem: Vec<Elem<'a>>,
        #[serde(flatten)]
        def: serde_json::Map<String, Value>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Elem<'a> {
        Seen(#[serde(borrow)] SeenElem<'a>),
        Other(Value),
    }
    #[derive(Deserialize)]
    struct SeenElem<'a> {
        #[serde(borrow)]
        elem: SeenInner<'a>,
    }
    #[derive(Deserialize)]
    struct SeenInner<'a> {
        #[serde(borrow)]
        val: SeenConcat<'a>,
        #[serde(default)]
        counter: Option<SeenCounter>,
    }
    #[derive(Deserialize)]
    struct SeenConcat<'a> {
        #[serde(borrow)]
        concat: (Cow<'a, str>, SeenProto<'a>, u64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SeenProto<'a> {
        Name(#[serde(borrow)] Cow<'a, str>),
        Number(u64),
    }
    #[derive(Deserialize)]
    struct SeenCounter {
        #[serde(default)]
        packets: u64,
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let doc: Doc<'_> = serde_json::from_slice(out).map_err(|e| format!("nft's JSON: {e}"))?;
    let mut items = Vec::new();
    let mut elements: Vec<(String, Vec<Value>)> = Vec::new();
    let mut listed = Listed {
        structure: Value::Null,
        set: GuardSet::default(),
        blocked: Vec::new(),
    };
    for it in doc.nftables {
        if let Some(s) = it.set {
            let mut def = s.def;
            def.insert("name".into(), Value::String(s.name.to_string()));
            let mut v = Value::Object(def);
            strip(&mut v);
            items.push(json!({ "set": v }));
            match s.name.as_ref() {
                "approved4" | "approved6" => {
                    let mut vals = Vec::new();
                    for e in s.elem {
                        let v = match e {
                            Elem::Other(v) => v,
                            Elem::Seen(_) => return Err("an approved set holds records".into()),
                        };
                        match listed_net(&v) {
                            Some(IpNet::V4(n)) => listed.set.v4.push(n),
                            Some(IpNet::V6(n)) => listed.set.v6.push(n),
                            None => {}
                        }
                        vals.push(v);
                    }
                    elements.push((s.name.to_string(), vals));
                }
                "seen4" | "seen6" => {
                    for e in s.elem {
                        let Elem::Seen(e) = e else { continue };
                        let (addr, proto, port) = e.elem.val.concat;
                        let (Ok(addr), Ok(port)) = (addr.parse::<IpAddr>(), u16::try_from(port))
                        else {
                            continue;
                        };
                        listed.blocked.push(Blocked {
                            addr,
                            proto: match proto {
                                SeenProto::Name(n) => crate::sanitize::line(&n, 16),
                                SeenProto::Number(n) => n.to_string(),
                            },
                            port,
                            packets: e.elem.counter.map_or(0, |c| c.packets),
                        });
                    }
                }
                _ => {}
            }
            continue;
        }
        if it.rest.contains_key("metainfo") || it.rest.is_empty() {
            continue;
        }
        let mut v = Value::Object(it.rest);
        strip(&mut v);
        items.push(v);
    }
    // As `structure` lists them: approved4, then approved6, after the table's items.
    elements.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, elem) in elements {
        items.push(json!({"elements": {"set": name, "elem": elem}}));
    }
    listed.set.v4.sort();
    listed.set.v6.sort();
    listed
        .blocked
        .sort_by(|a, b| (a.addr, &a.proto, a.port).cmp(&(b.addr, &b.proto, b.port)));
    listed.structure = Value::Array(items);
    Ok(listed)
}

/// How `now` (from [`listed`]) differs from what was applied, in one line (`None`: the same).
pub fn differs(applied: &Value, now: &Value) -> Option<String> {
    if applied == now {
        return None;
    }
    let (a, n) = (
        applied.as_array().cloned().unwrap_or_default(),
        now.as_array().cloned().unwrap_or_default(),
    );
    let what = |v: &Value| -> String {
        let kind = v
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        let body = &v[&kind];
        match kind.as_str() {
            "rule" => format!("a rule in chain {}", body["chain"].as_str().unwrap_or("?")),
            "elements" => format!("the elements of {}", body["set"].as_str().unwrap_or("?")),
            k => format!("{k} {}", body["name"].as_str().unwrap_or("?")),
        }
    };
    if let Some(x) = n.iter().find(|x| !a.contains(x)) {
        return Some(format!("{} is not what was applied", what(x)));
    }
    if let Some(x) = a.iter().find(|x| !n.contains(x)) {
        return Some(format!("{} that was applied is missing", what(x)));
    }
    Some("its items are in another order than applied".into())
}

/// Whether `name` is an interface in this network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// The names of the sets in a listing of the table, and `NAME:interval` for those with the
/// interval flag.
fn set_names(out: &[u8]) -> Vec<String> {
    let doc: Value = serde_json::from_slice(out).unwrap_or_default();
    let mut names = Vec::new();
    for i in doc["nftables"].as_array().into_iter().flatten() {
        let Some(name) = i["set"]["name"].as_str() else {
            continue;
        };
        names.push(name.to_owned());
        if i["set"]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "interval"))
        {
            names.push(format!("{name}:interval"));
        }
    }
    names
}

/// An element of an approved set as nftables lists it: an address, or a prefix.
fn listed_net(el: &Value) -> Option<IpNet> {
    if let Some(s) = el.as_str() {
        return s.parse::<IpAddr>().ok().map(IpNet::from);
    }
    let p = &el["prefix"];
    let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
    IpNet::new(addr, u8::try_from(p["len"].as_u64()?).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> GuardSet {
        GuardSet::from_nets(nets.iter().map(|s| s.parse::<IpNet>().unwrap()))
    }

    #[test]
    fn prefixes_but_no_default_route_and_a_real_interface_name_pass() {
        let ok = set(&["100.64.0.2/32", "fd7a:115c:a1e0::2/128", "192.168.77.0/24"]);
        assert!(validate("tailscale0", &ok).is_ok());
        for bad in [
            "",
            "a b",
            "tailscale0\"; flush ruleset",
            "0123456789abcdef",
            "..",
        ] {
            assert!(validate(bad, &ok).is_err(), "{bad:?}");
        }
        for bad in [
            GuardSet {
                v4: vec!["0.0.0.0/0".parse().unwrap()],
                v6: vec![],
            },
            GuardSet {
                v4: vec![],
                v6: vec!["::/0".parse().unwrap()],
            },
            GuardSet {
                v4: vec!["10.0.0.1/8".parse().unwrap()],
                v6: vec![],
            },
            GuardSet {
                v4: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "10.1.0.0/16".parse().unwrap(),
                ],
                v6: vec![],
            },
        ] {
            assert!(validate("tailscale0", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_rules_deny_by_default_and_let_replies_in() {
        let doc = apply_document("tailscale0", &set(&["100.64.0.2/32", "10.5.0.0/16"]), &[]);
        let text = doc.to_string();
        let first = &doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["add"]["rule"]["chain"] == "input")
            .unwrap()["add"]["rule"]["expr"];
        assert_eq!(
            first[1]["match"]["left"],
            json!({"ct": {"key": "direction"}})
        );
        assert_eq!(first[2], json!({"accept": null}));
        // No rule looks at the tailnet's ranges: every source is judged.
        assert!(!text.contains("100.64.0.0"), "{text}");
        assert!(
            text.contains(r#""elem":["100.64.0.2"]"#)
                || text.contains(r#"{"prefix":{"addr":"10.5.0.0","len":16}}"#)
        );
        let rules: Vec<&Value> = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["add"]["rule"]["chain"] == "input")
            .collect();
        // The last rule drops.
        assert_eq!(
            rules.last().unwrap()["add"]["rule"]["expr"][1],
            json!({"drop": null})
        );
        // An earlier layout is replaced in the same transaction.
        let doc = apply_document(
            "tailscale0",
            &GuardSet::default(),
            &["approved4".into(), "seen4".into()],
        );
        assert!(doc["nftables"][1]["delete"]["table"].is_object());
        assert!(doc.to_string().contains(r#""name":"seen4""#));
    }

    #[test]
    fn the_document_names_only_its_own_table() {
        let doc = apply_document("tailscale0", &GuardSet::default(), &[]).to_string();
        for (i, _) in doc.match_indices("\"table\":") {
            let rest = &doc[i..];
            assert!(
                rest.starts_with(&format!("\"table\":\"{TABLE}\""))
                    || rest.starts_with(&format!(
                        "\"table\":{{\"family\":\"inet\",\"name\":\"{TABLE}\""
                    )),
                "{}",
                &rest[..60.min(rest.len())]
            );
        }
        // No element is added to an empty set (nft refuses an empty `elem`).
        assert!(!doc.contains("\"element\""));
    }

    #[test]
    fn a_listing_reads_back_in_one_pass() {
        let out = br#"{"nftables":[{"metainfo":{"version":"1.0.6","json_schema_version":1}},
          {"table":{"family":"inet","name":"tailscale_monitor_guard","handle":1}},
          {"set":{"family":"inet","name":"approved4","table":"tailscale_monitor_guard","type":"ipv4_addr","handle":2,"flags":["interval"],"elem":["100.64.0.3","100.64.0.2",{"prefix":{"addr":"10.5.0.0","len":16}}]}},
          {"set":{"family":"inet","name":"meter4","table":"tailscale_monitor_guard","type":"ipv4_addr","handle":3,"size":4096,"flags":["timeout"],"timeout":60,"elem":[{"elem":{"val":"100.64.0.9","expires":50}}]}},
          {"set":{"family":"inet","name":"seen4","table":"tailscale_monitor_guard","type":["ipv4_addr","inet_proto","inet_service"],"handle":4,
            "elem":[{"elem":{"val":{"concat":["100.64.0.9","tcp",8080]},"expires":3597,"counter":{"packets":2,"bytes":120}}}]}},
          {"rule":{"family":"inet","table":"tailscale_monitor_guard","chain":"input","handle":9,"expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"tailscale0"}}]}}]}"#;
        let l = parse_listed(out).unwrap();
        assert_eq!(l.set.v4.len(), 3);
        assert_eq!(l.set.v4[0].to_string(), "10.5.0.0/16");
        assert_eq!(l.set.v4[1].to_string(), "100.64.0.2/32");
        assert_eq!(
            l.blocked,
            vec![Blocked {
                addr: "100.64.0.9".parse().unwrap(),
                proto: "tcp".into(),
                port: 8080,
                packets: 2
            }]
        );
        // The structure: no handles, no records, the approved elements at the end.
        let text = l.structure.to_string();
        assert!(
            !text.contains("handle") && !text.contains("expires"),
            "{text}"
        );
        assert!(
            text.contains(r#"{"elements":{"elem":["100.64.0.3","100.64.0.2"#),
            "{text}"
        );
        // The same table with other records and handles: the same structure.
        let other = String::from_utf8_lossy(out)
            .replace("\"handle\":9", "\"handle\":12")
            .replace("\"packets\":2", "\"packets\":7");
        assert_eq!(
            parse_listed(other.as_bytes()).unwrap().structure,
            l.structure
        );
        // An element added by hand to an approved set: another structure.
        let widened = String::from_utf8_lossy(out)
            .replace("\"100.64.0.3\",", "\"100.64.0.3\",\"100.64.0.9\",");
        assert_ne!(
            parse_listed(widened.as_bytes()).unwrap().structure,
            l.structure
        );
    }
}
