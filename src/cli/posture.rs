//! `posture`: the hardening audit as a table or JSON.

use std::io::Write as _;
use std::path::Path;

use chrono::Utc;

use crate::cli::load;
use crate::sanitize;

/// `posture`: the report, and its Nagios exit code.
pub(super) async fn posture(explicit: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    use crate::model::posture::Status;
    let cfg = load(explicit, true)?;
    let source = crate::source::Source::from_config(&cfg.source);
    let node = source.snapshot().await;
    let control = cfg
        .control
        .as_ref()
        .map(crate::source::control::ControlSource::from_config);
    let control_read = match &control {
        Some(c) => Some(c.snapshot().await),
        None => None,
    };
    let note = match &control_read {
        None => "no [control] configured".to_owned(),
        Some(Err(e)) => e.to_string(),
        Some(Ok(_)) => String::new(),
    };
    let server = crate::source::server::facts(&cfg);
    let report = crate::posture::evaluate(&crate::posture::Inputs {
        control: control_read.as_ref().and_then(|r| r.as_ref().ok()),
        control_note: &note,
        node: node.as_ref().ok(),
        server: Some(&server),
        now: Utc::now(),
    });
    let code = match (report.worst_failure(), &node, &control_read) {
        (_, Err(_), None | Some(Err(_))) => 3,
        (Some(crate::model::Severity::Critical), _, _) => 2,
        (Some(_), _, _) => 1,
        (None, _, _) => 0,
    };
    let mut out = std::io::stdout().lock();
    if json {
        super::table::print_json(&report)?;
        return Ok(code);
    }
    let s = |v: &str, n| sanitize::line(v, n);
    if let Err(e) = &node {
        writeln!(out, "tailscaled: {}", s(&e.to_string(), 300))?;
    }
    if !note.is_empty() {
        writeln!(out, "control plane: {}", s(&note, 300))?;
    }
    writeln!(out, "{:<6} {:<9} {:<8} CHECK", "ID", "SEVERITY", "STATUS")?;
    for f in &report.findings {
        writeln!(
            out,
            "{:<6} {:<9} {:<8} {}",
            f.id,
            f.severity.as_str(),
            f.status.as_str(),
            s(&f.title, 100)
        )?;
    }
    writeln!(out, "\nposture: {}", report.summary())?;
    for f in report
        .findings
        .iter()
        .filter(|f| matches!(f.status, Status::Fail | Status::Unknown | Status::Manual))
    {
        writeln!(
            out,
            "\n{} {} — {}",
            f.id,
            f.status.as_str(),
            s(&f.title, 100)
        )?;
        writeln!(out, "  evidence: {}", s(&f.evidence, 600))?;
        if !f.fix.is_empty() {
            writeln!(out, "  fix: {}", s(&f.fix, 600))?;
        }
    }
    Ok(code)
}
