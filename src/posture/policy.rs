//! The policy: wide-open rules, root SSH, autogroups, tests, parse limits.

use serde_json::Value;

use crate::model::control::ControlSnapshot;
use crate::model::posture::Status;
use crate::posture::{list, unreadable, Inputs, Out};

/// The deepest policy read: json5 recurses without a limit, and a policy nested some 48,000
/// deep overflows the stack (an abort nothing can catch). Real policies nest a handful deep.
pub(super) const MAX_POLICY_DEPTH: usize = 256;
/// The largest policy read (Tailscale caps a policy file at 1 MiB).
pub(super) const MAX_POLICY_BYTES: usize = 4 << 20;

/// The policy as JSON (HuJSON: comments and trailing commas allowed), bounded in size and
/// nesting before the parser sees it.
pub(super) fn policy_json(c: &ControlSnapshot) -> Option<Result<Value, String>> {
    let p = c.policy.as_ref()?;
    Some(parse_policy(&p.text))
}

pub(super) fn parse_policy(text: &str) -> Result<Value, String> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "the policy is larger than {MAX_POLICY_BYTES} bytes ({} bytes): not read",
            text.len()
        ));
    }
    let depth = nesting_depth(&crate::model::policy::strip_comments(text));
    if depth > MAX_POLICY_DEPTH {
        return Err(format!(
            "the policy nests {depth} deep, more than {MAX_POLICY_DEPTH}: not read"
        ));
    }
    json5::from_str::<Value>(text).map_err(|e| format!("the policy does not parse: {e}"))
}

/// The deepest nesting of `[` and `{` outside double-quoted strings (comments already removed).
pub(super) fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for c in text.chars() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

pub(super) fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(super) fn policy(o: &mut Out, i: &Inputs) {
    let checks = ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06"];
    let Some(c) = i.control else {
        for id in checks {
            let fix = o.fix(id);
            o.add(id, Status::Unknown, unreadable(i), fix);
        }
        return;
    };
    let doc = match policy_json(c) {
        None if c.kind == "headscale" => {
            // Headscale without a policy allows everything.
            for id in checks {
                let fix = o.fix(id);
                let (st, ev) = match id {
                    "PL-01" => (
                        Status::Fail,
                        "no policy is set: Headscale allows all traffic between all nodes"
                            .to_owned(),
                    ),
                    "PL-05" => (Status::Fail, "no policy is set".to_owned()),
                    _ => (
                        Status::Pass,
                        "no policy is set (nothing of this kind)".to_owned(),
                    ),
                };
                o.add(id, st, ev, fix);
            }
            return;
        }
        None => {
            for id in checks {
                let fix = o.fix(id);
                o.add(
                    id,
                    Status::Unknown,
                    "unknown (missing scope policy_file:read)",
                    fix,
                );
            }
            return;
        }
        Some(Err(e)) => {
            for id in checks {
                let fix = o.fix(id);
                o.add(id, Status::Unknown, e.clone(), fix);
            }
            return;
        }
        Some(Ok(v)) => v,
    };
    let where_ = if c.kind == "headscale" {
        "headscale policy"
    } else {
        "tailnet policy file"
    };
    // PL-01: an ACL or grant from * to *:* (or to * with ip ["*"]).
    let mut allow_all = Vec::new();
    for (n, r) in doc["acls"].as_array().into_iter().flatten().enumerate() {
        let src = strings(&r["src"]);
        let dst = strings(&r["dst"]);
        if src.contains(&"*") && dst.contains(&"*:*") {
            allow_all.push(format!("acls[{n}]"));
        }
    }
    for (n, g) in doc["grants"].as_array().into_iter().flatten().enumerate() {
        let src = strings(&g["src"]);
        let dst = strings(&g["dst"]);
        let ip = strings(&g["ip"]);
        if src.contains(&"*") && dst.contains(&"*") && ip.contains(&"*") {
            allow_all.push(format!("grants[{n}]"));
        }
    }
    o.judge(
        checks[0],
        allow_all.is_empty(),
        format!("no rule from * to *:* in the {where_}"),
        format!(
            "{} allow(s) every source to every port ({where_})",
            allow_all.join(", ")
        ),
    );
    let text = &c
        .policy
        .as_ref()
        .map(|p| crate::model::policy::strip_comments(&p.text))
        .unwrap_or_default();
    let danger = text.contains("autogroup:danger-all");
    o.judge(
        checks[1],
        !danger,
        format!("not in the {where_}"),
        format!("autogroup:danger-all appears in the {where_}"),
    );
    let broad = |s: &str| matches!(s, "*" | "autogroup:member" | "autogroup:danger-all");
    let mut root_ssh = Vec::new();
    for (n, r) in doc["ssh"].as_array().into_iter().flatten().enumerate() {
        if r["action"].as_str() == Some("accept")
            && strings(&r["users"]).contains(&"root")
            && strings(&r["src"]).iter().any(|s| broad(s))
        {
            root_ssh.push(format!("ssh[{n}]"));
        }
    }
    o.judge(
        checks[2],
        root_ssh.is_empty(),
        "no SSH rule accepts root from *, autogroup:member or autogroup:danger-all".to_owned(),
        format!(
            "{} accept(s) root without a check from a broad source",
            root_ssh.join(", ")
        ),
    );
    let mut member_tags: Vec<String> = doc["tagOwners"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, owners)| strings(owners).iter().any(|s| broad(s)))
                .map(|(t, _)| t.clone())
                .collect()
        })
        .unwrap_or_default();
    member_tags.sort();
    o.judge(
        checks[3],
        member_tags.is_empty(),
        "no tag is owned by * or autogroup:member".to_owned(),
        format!("any member may apply {}", list(&member_tags)),
    );
    let tests = doc["tests"].as_array().is_some_and(|t| !t.is_empty())
        || doc["sshTests"].as_array().is_some_and(|t| !t.is_empty());
    o.judge(
        checks[4],
        tests,
        "a tests section is present".to_owned(),
        format!("no tests section in the {where_}"),
    );
    let mut wide = Vec::new();
    let aa = &doc["autoApprovers"];
    if strings(&aa["exitNode"]).iter().any(|s| broad(s)) {
        wide.push("exitNode".to_owned());
    }
    if let Some(routes) = aa["routes"].as_object() {
        for (r, who) in routes {
            if strings(who).iter().any(|s| broad(s)) {
                wide.push(format!("routes {r}"));
            }
        }
    }
    o.judge(
        checks[5],
        wide.is_empty(),
        "no autoApprover is * or autogroup:member".to_owned(),
        format!("any member is auto-approved for {}", list(&wide)),
    );
}
