//! The posture checks against small documents, and the golden report.

use super::policy::*;
use super::*;
use crate::model::Severity;

use crate::model::posture::KeyFacts;

/// Issue 20: any policy text parses or fails, without a panic or a stack overflow.
#[test]
fn fuzz_policy_text() {
    crate::fuzz::check(
        "policy",
        &[br#"{
  // comment [[[
  "tagOwners": {"tag:server": ["ops@"]},
  "acls": [{"action": "accept", "src": ["ops@", "*"], "dst": ["tag:server:22", "*:*"]}],
  "ssh": [{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}],
}"#],
        |b| {
            let _ = parse_policy(&String::from_utf8_lossy(b));
        },
    );
}

/// F3: a policy nested 100,000 deep is an error, not a stack overflow; brackets in strings
/// and comments do not count.
#[test]
fn a_deeply_nested_policy_is_refused_before_the_parser() {
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let e = parse_policy(&deep).unwrap_err();
    assert!(e.contains("nests 100000 deep"), "{e}");
    let ok = r#"{"acls": [{"src": ["[[[[["], "dst": ["*:*"]}] // [[[[[[
    }"#;
    assert_eq!(nesting_depth(&crate::model::policy::strip_comments(ok)), 4);
    assert!(parse_policy(ok).is_ok());
}
use crate::model::control::{ControlDevice, PolicyDoc};
use crate::model::posture::{ControlPosture, DeviceFacts};
use crate::model::StableNodeId;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn tailscale(settings: Option<Value>, policy: Option<&str>) -> ControlSnapshot {
    ControlSnapshot {
        kind: "tailscale".into(),
        settings: settings.map(|v| serde_json::from_value(v).unwrap()),
        policy: policy.map(|t| PolicyDoc {
            text: t.into(),
            etag: "1".into(),
        }),
        posture: ControlPosture {
            auth_keys: Some(vec![]),
            api_keys: Some(vec![]),
            ..ControlPosture::default()
        },
        ..ControlSnapshot::default()
    }
}

fn report(c: Option<&ControlSnapshot>) -> Report {
    evaluate(&Inputs {
        control: c,
        control_note: "no [control] configured",
        node: None,
        server: None,
        now: now(),
    })
}

fn status(r: &Report, id: &str) -> (Status, String) {
    let f = r.findings.iter().find(|f| f.id == id).unwrap();
    (f.status, f.evidence.clone())
}

#[test]
fn settings_pass_fail_and_unknown() {
    let good = serde_json::json!({"devicesApprovalOn": true, "usersApprovalOn": true, "devicesKeyDurationDays": 30,
        "usersRoleAllowedToJoinExternalTailnets": "admin", "networkFlowLoggingOn": true, "httpsEnabled": false});
    let r = report(Some(&tailscale(Some(good), None)));
    for id in ["TN-01", "TN-02", "TN-03", "TN-04", "TN-05", "TN-06"] {
        assert_eq!(status(&r, id).0, Status::Pass, "{id}");
    }
    let bad = serde_json::json!({"devicesApprovalOn": false, "usersApprovalOn": false, "devicesKeyDurationDays": 180,
        "usersRoleAllowedToJoinExternalTailnets": "member", "networkFlowLoggingOn": false, "httpsEnabled": true});
    let r = report(Some(&tailscale(Some(bad), None)));
    for id in ["TN-01", "TN-02", "TN-03", "TN-04", "TN-05", "TN-06"] {
        assert_eq!(status(&r, id).0, Status::Fail, "{id}");
    }
    let nulls = serde_json::json!({"devicesApprovalOn": null});
    let r = report(Some(&tailscale(Some(nulls), None)));
    assert_eq!(status(&r, "TN-01").0, Status::Unknown);
    assert_eq!(status(&r, "TN-02").0, Status::Unknown, "absent");
    let r = report(Some(&tailscale(None, None)));
    assert!(status(&r, "TN-01").1.contains("feature_settings:read"));
    let r = report(None);
    assert!(
        r.findings
            .iter()
            .all(|f| f.status != Status::Pass || f.area == "server"),
        "nothing passes unread"
    );
    assert_eq!(status(&r, "MN-01").0, Status::Manual);
}

#[test]
fn policy_checks_read_hujson() {
    let weak = r#"{
      // everything, for now
      "tagOwners": {"tag:server": ["autogroup:member"],},
      "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]},],
      "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}],
      "autoApprovers": {"exitNode": ["autogroup:member"], "routes": {"10.0.0.0/8": ["*"]}},
      "grants": [{"src": ["autogroup:danger-all"], "dst": ["tag:x"], "ip": ["443"]}],
    }"#;
    let r = report(Some(&tailscale(None, Some(weak))));
    for id in ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06"] {
        assert_eq!(status(&r, id).0, Status::Fail, "{id}: {:?}", status(&r, id));
    }
    assert!(status(&r, "PL-06")
        .1
        .contains("exitNode, routes 10.0.0.0/8"));
    let tight = r#"{
      // "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], (commented out)
      "tagOwners": {"tag:server": ["group:admins"]},
      "grants": [{"src": ["group:admins"], "dst": ["tag:server"], "ip": ["22"]}],
      "ssh": [{"action": "check", "src": ["group:admins"], "dst": ["tag:server"], "users": ["root"]}],
      "tests": [{"src": "alice@example.com", "accept": ["tag:server:22"]}],
    }"#;
    let r = report(Some(&tailscale(None, Some(tight))));
    for id in ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06"] {
        assert_eq!(status(&r, id).0, Status::Pass, "{id}: {:?}", status(&r, id));
    }
    let r = report(Some(&tailscale(None, Some("{ not json"))));
    assert!(status(&r, "PL-01").1.contains("does not parse"));
    let r = report(Some(&tailscale(None, None)));
    assert!(status(&r, "PL-01").1.contains("policy_file:read"));
    // Headscale without a policy allows everything.
    let mut hs = tailscale(None, None);
    hs.kind = "headscale".into();
    let r = report(Some(&hs));
    assert_eq!(status(&r, "PL-01").0, Status::Fail);
    assert_eq!(status(&r, "TN-01").0, Status::NotAvailable);
    assert_eq!(status(&r, "DV-06").0, Status::NotAvailable);
    assert_eq!(status(&r, "SV-01").0, Status::NotAvailable);
}

#[test]
fn keys_and_devices() {
    let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
    let key = |id: &str, reusable, created: &str, expires: Option<&str>, spent| KeyFacts {
        id: id.into(),
        kind: "auth".into(),
        reusable,
        created: at(created),
        expires: expires.and_then(at),
        spent,
        ..KeyFacts::default()
    };
    let mut c = tailscale(None, None);
    c.posture.auth_keys = Some(vec![
        key(
            "short",
            false,
            "2026-11-24T00:00:00Z",
            Some("2026-11-26T00:00:00Z"),
            false,
        ),
        key(
            "expired",
            true,
            "2025-01-01T00:00:00Z",
            Some("2025-02-01T00:00:00Z"),
            false,
        ),
        key("revoked", true, "2026-11-01T00:00:00Z", None, true),
    ]);
    let r = report(Some(&c));
    assert_eq!(
        status(&r, "KY-01").0,
        Status::Pass,
        "expired and revoked keys are no risk"
    );
    assert_eq!(status(&r, "KY-02").0, Status::Pass);
    c.posture.auth_keys.as_mut().unwrap().push(key(
        "forever",
        true,
        "2026-11-01T00:00:00Z",
        None,
        false,
    ));
    let r = report(Some(&c));
    assert_eq!(status(&r, "KY-01").0, Status::Fail);
    assert!(status(&r, "KY-02").1.contains("forever (never expires)"));
    c.posture.api_keys = None;
    assert_eq!(status(&report(Some(&c)), "KY-03").0, Status::Unknown);

    let dev = |id: &str, tags: &[&str], no_expiry: bool| ControlDevice {
        id: StableNodeId(id.into()),
        hostname: id.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        key_expiry_disabled: no_expiry,
        ..ControlDevice::default()
    };
    for d in [
        dev("laptop", &[], true),
        dev("nas", &["tag:server"], true),
        dev("phone", &[], false),
    ] {
        c.devices.insert(d.id.clone(), d);
    }
    c.posture.devices.insert(
        StableNodeId("phone".into()),
        DeviceFacts {
            last_seen: at("2026-08-01T00:00:00Z"),
            multiple_connections: Some(true),
            ..DeviceFacts::default()
        },
    );
    let r = report(Some(&c));
    assert_eq!(
        status(&r, "DV-01"),
        (Status::Fail, "key expiry disabled on laptop".into())
    );
    assert_eq!(status(&r, "DV-02").0, Status::Fail);
    assert_eq!(
        status(&r, "DV-03").1,
        "last seen more than 60 days ago: phone"
    );
    assert_eq!(status(&r, "DV-06").0, Status::Fail);
    assert_eq!(status(&r, "DV-07").0, Status::Pass);
}

#[test]
fn drift_is_pass_to_fail_and_back_never_unknown() {
    let ok = tailscale(Some(serde_json::json!({"devicesApprovalOn": true})), None);
    let off = tailscale(Some(serde_json::json!({"devicesApprovalOn": false})), None);
    let unread = tailscale(None, None);
    let (a, b, u) = (report(Some(&ok)), report(Some(&off)), report(Some(&unread)));
    assert!(
        drift(None, &a, now()).is_empty(),
        "the first evaluation is the baseline"
    );
    let ev = drift(Some(&known(&a)), &b, now());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::PostureDegraded);
    assert_eq!(ev[0].severity, Severity::Critical);
    assert!(drift(Some(&known(&b)), &b, now()).is_empty(), "once");
    assert!(
        drift(Some(&known(&a)), &u, now()).is_empty(),
        "unreadable is not a change"
    );
    let ev = drift(Some(&known(&b)), &a, now());
    assert_eq!(ev[0].kind, EventKind::PostureImproved);
    assert_eq!(ev[0].severity, Severity::Info);
}

/// The catalog is what a report holds: every check once, with the catalog's area, title and
/// severity, whatever could be read.
#[test]
fn every_check_of_the_catalog_is_reported_once() {
    let server = crate::model::posture::ServerFacts {
        guard_enforce: true,
        ..Default::default()
    };
    let r = evaluate(&Inputs {
        control: None,
        control_note: "no [control] configured",
        node: None,
        server: Some(&server),
        now: now(),
    });
    let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    let mut want: Vec<&str> = super::catalog::CHECKS.iter().map(|s| s.id).collect();
    want.sort_unstable();
    let mut got = ids.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    for f in &r.findings {
        let s = super::catalog::spec(&f.id);
        assert_eq!(
            (f.area.as_str(), f.title.as_str(), f.severity),
            (s.area, s.title, s.severity)
        );
    }
}
