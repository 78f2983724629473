//! Auth and API keys: reusable, long-lived, unused.

use chrono::{DateTime, Duration, Utc};

use crate::model::posture::KeyFacts;
use crate::posture::{is_headscale, list, pass_if, readable, Inputs, Out, LONG_LIVED_DAYS};

pub(super) fn key_risks(keys: &[KeyFacts], now: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
    let label = |k: &KeyFacts| {
        if k.description.is_empty() {
            format!("{} {}", k.kind, k.id)
        } else {
            format!("{} {} ({})", k.kind, k.id, k.description)
        }
    };
    let live = keys
        .iter()
        .filter(|k| !k.spent && k.expires.is_none_or(|e| e > now));
    let mut reusable = Vec::new();
    let mut long = Vec::new();
    for k in live {
        if k.reusable {
            reusable.push(label(k));
        }
        let life = match (k.created, k.expires) {
            (_, None) => None,
            (Some(c), Some(e)) => Some(e - c),
            (None, Some(e)) => Some(e - now),
        };
        if life.is_none_or(|l| l > Duration::days(LONG_LIVED_DAYS)) {
            long.push(format!(
                "{} ({})",
                label(k),
                k.expires.map_or("never expires".to_owned(), |e| format!(
                    "expires {}",
                    e.format("%Y-%m-%d")
                ))
            ));
        }
    }
    (reusable, long)
}

pub(super) fn keys(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let cp = i.control.map(|c| &c.posture);
    let (auth_src, api_src) = if hs {
        ("GET /api/v1/preauthkey", "GET /api/v1/apikey")
    } else {
        ("Admin API /keys?all=true", "Admin API /keys?all=true")
    };
    // Each check's keys, whether it flags reusable keys (else long-lived ones), and where read.
    let rows = [
        ("KY-01", cp.map(|p| &p.auth_keys), true, auth_src),
        ("KY-02", cp.map(|p| &p.auth_keys), false, auth_src),
        ("KY-03", cp.map(|p| &p.api_keys), false, api_src),
    ];
    for (id, data, reusable, src) in rows {
        let fix = o.fix(id);
        let scope = if hs {
            format!("{src} was refused: the API key may not list keys")
        } else {
            format!("{src} was refused: missing scope auth_keys:read")
        };
        if let Some(keys) = readable(o, i, (id, fix), false, data, &scope) {
            let (r, l) = key_risks(keys, i.now);
            let hits = if reusable { r } else { l };
            o.add(
                id,
                pass_if(hits.is_empty()),
                if hits.is_empty() {
                    format!("{} key(s) read from {src}; none of this kind", keys.len())
                } else {
                    format!("{} ({src})", list(&hits))
                },
                fix,
            );
        }
    }
}
