//! The effective configuration as TOML, secrets redacted (`config check`).

use std::time::Duration;

use crate::config::control::{ControlApi, TailscaleAuth};
use crate::config::{Config, SourceKind};
use crate::diff::ConnectAlert;

impl Config {
    /// The effective configuration as TOML, secrets redacted.
    pub fn render(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let d = |d: Duration| q(&humantime::format_duration(d).to_string());
        let mut out = String::new();
        out += &format!(
            "[tailscale]\nsource = {}\nsocket = {}\nprivileged_socket = {}\ncli = {}\ntimeout = {}\n\n",
            q(match self.source.kind {
                SourceKind::LocalApi => "localapi",
                SourceKind::Cli => "cli",
            }),
            q(&self.source.socket.display().to_string()),
            q(&self.source.privileged_socket.display().to_string()),
            q(&self.source.cli.display().to_string()),
            d(self.source.timeout)
        );
        out += &format!(
            "[state]\ndir = {}\n\n",
            q(&self.state_dir.display().to_string())
        );
        if let Some(l) = self.metrics_listen {
            out += &format!("[metrics]\nlisten = {}\n", q(&l.to_string()));
            if self.metrics_token.is_some() {
                out += "token_file = \"(set)\"\n";
            }
            out += "\n";
        }
        if let Some(e) = self.digest_every {
            out += &format!("[digest]\nevery = {}\n\n", d(e));
        }
        out += &format!(
            "[daemon]\ninterval = {}\nreconcile = {}\ngrace = {}\nbatch_window = {}\naccess_interval = {}\n\n",
            d(self.daemon.interval),
            d(self.daemon.reconcile),
            d(self.daemon.grace),
            d(self.daemon.batch_window),
            d(self.daemon.access_interval)
        );
        out += &format!(
            "[alerts]\nkey_expiry_warning = {}\npeer_connected = {}\npeer_connected_quiet = {}\ndelivery_max_age = {}\ncoalesce_window = {}\n",
            d(self.policy.key_expiry_warn.to_std().unwrap_or_default()),
            q(match self.policy.connect_alert {
                ConnectAlert::New => "new",
                ConnectAlert::All => "all",
                ConnectAlert::None => "none",
            }),
            d(self.policy.connect_quiet.to_std().unwrap_or_default()),
            d(self.delivery_max_age),
            d(self.coalesce_window)
        );
        out += &format!(
            "\n[guard]\nmode = {}\ninterface = {}\napprove_new = {}\n",
            q(if self.guard.enforcing() {
                "enforce"
            } else {
                "off"
            }),
            q(&self.guard.interface),
            match &self.guard.approve_new {
                crate::model::guard::ApproveNew::Never => q("never"),
                crate::model::guard::ApproveNew::Matching(v) => format!(
                    "[{}]",
                    v.iter()
                        .map(|s| q(match s {
                            crate::model::guard::Selector::Id(x)
                            | crate::model::guard::Selector::Tag(x)
                            | crate::model::guard::Selector::Login(x) => x,
                        }))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        );
        for c in &self.channels {
            out += &format!(
                "\n[[notify]]\nname = {}\nmin_severity = {}\n",
                q(&c.name),
                q(c.route.min_severity.as_str())
            );
            if let Some(k) = &c.route.kinds {
                let v: Vec<String> = k.iter().map(|k| q(k.as_str())).collect();
                out += &format!("events = [{}]\n", v.join(", "));
            }
            out += &format!(
                "kind = {}\ntimeout = {}\n",
                q(c.kind.as_str()),
                d(c.timeout)
            );
            c.kind.show(&mut out);
        }
        if let Some(c) = &self.control {
            out += "\n[control]\n";
            match &c.api {
                ControlApi::Headscale { url, .. } => {
                    out += &format!(
                        "kind = \"headscale\"\nurl = {}\napi_key_file = \"(redacted)\"\n",
                        q(&crate::sanitize::redact_url(url))
                    );
                }
                ControlApi::Tailscale {
                    api_url,
                    tailnet,
                    auth,
                } => {
                    out += &format!(
                        "kind = \"tailscale\"\napi_url = {}\ntailnet = {}\n",
                        q(&crate::sanitize::redact_url(api_url)),
                        q(tailnet)
                    );
                    match auth {
                        TailscaleAuth::ApiKey(_) => out += "api_key_file = \"(redacted)\"\n",
                        TailscaleAuth::OAuth { client_id, .. } => {
                            out += &format!(
                                "oauth_client_id = {}\noauth_secret_file = \"(redacted)\"\n",
                                q(client_id)
                            )
                        }
                    }
                }
            }
            out += &format!("interval = {}\n", d(c.interval));
        }
        for w in &self.policy.watches {
            let devs: Vec<String> = w.devices.iter().map(|d| q(d)).collect();
            out += &format!(
                "\n[[watch]]\nname = {}\ndevices = [{}]\noffline_after = {}\nback_after = {}\nseverity = {}\n",
                q(&w.name),
                devs.join(", "),
                d(w.offline_after.to_std().unwrap_or_default()),
                d(w.back_after.to_std().unwrap_or_default()),
                q(w.severity.as_str())
            );
            if w.schedule.is_some() {
                out += "# schedule: set (outside it nothing is alerted)\n";
            }
        }
        if let Some(w) = &self.webhooks {
            out += &format!(
                "\n[webhooks]\nlisten = {}\nsecret_file = \"(redacted)\"\n",
                q(&w.listen.to_string())
            );
        }
        for x in &self.exports {
            out += &format!("\n[[export]]\nname = {}\n", q(&x.name));
            out += &match &x.sink {
                super::ExportSink::File { path, format } => format!(
                    "kind = \"file\"\npath = {}\nformat = {}\n",
                    q(&path.display().to_string()),
                    q(match format {
                        super::FileFormat::Ecs => "ecs",
                        super::FileFormat::Ocsf => "ocsf",
                    })
                ),
                super::ExportSink::Syslog {
                    address,
                    transport,
                    pen,
                } => {
                    let scheme = match transport {
                        super::Transport::Tcp => "tcp",
                        super::Transport::Udp => "udp",
                        super::Transport::Relp => "relp",
                        super::Transport::Tls(_) => "tls",
                        super::Transport::RelpTls(_) => "relp+tls",
                    };
                    let tls = transport.tls();
                    let mut s = format!(
                        "kind = \"syslog\"\naddress = {}\npen = {pen}\n",
                        q(&format!("{scheme}://{address}"))
                    );
                    let file = |key: &str, p: &std::path::Path| {
                        format!("{key} = {}\n", q(&p.display().to_string()))
                    };
                    if let Some(c) = tls.and_then(|t| t.ca_file.as_ref()) {
                        s += &file("ca_file", c);
                    }
                    if let Some((c, k)) = tls.and_then(|t| t.identity.as_ref()) {
                        s += &file("cert_file", c);
                        s += &file("key_file", k);
                    }
                    s
                }
                super::ExportSink::Journald { socket } => format!(
                    "kind = \"journald\"\nsocket = {}\n",
                    q(&socket.display().to_string())
                ),
            };
            out += &format!(
                "max_lag = {}\n",
                q(&humantime::format_duration(x.max_lag).to_string())
            );
        }
        if let Some(w) = &self.web {
            out += &match &w.listen {
                super::WebListen::Unix(p) => format!(
                    "\n[web]\nlisten = {}\n",
                    q(&format!("unix:{}", p.display()))
                ),
                super::WebListen::Tcp(a, _) => format!(
                    "\n[web]\nlisten = {}\ntoken_file = \"(redacted)\"\n",
                    q(&a.to_string())
                ),
            };
            if let Some(u) = &w.url {
                out += &format!("url = {}\n", q(u));
            }
            let v: Vec<String> = w.viewers.iter().map(|v| q(v)).collect();
            out += &format!("viewers = [{}]\n", v.join(", "));
        }
        out
    }
}
