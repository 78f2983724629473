//! The `alertmanager` channel against Prometheus Alertmanager from Debian, on loopback: the alert
//! and its labels as Alertmanager's API shows them, and two monitors reporting the same device
//! deduplicated into one alert — how a fleet shares one alert stream.
//! Needs `prometheus-alertmanager` (tests/setup/install-deps.sh); run with tests/run-all.sh.

use crate::support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::emulator::{self, Emulator};
use support::{http_get as get, Monitor};

struct Alertmanager {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Starts Alertmanager on a loopback port it picks itself (`127.0.0.1:0`); the port is read
    /// from its "Listening on" log line.
    fn start() -> Alertmanager {
        let bin = std::env::var("TM_ALERTMANAGER")
            .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "Alertmanager is not installed ({bin}): run tests/setup/install-deps.sh (apt package prometheus-alertmanager)"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_by: [alertname, tailnet, event, device_id]\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log_path = dir.path().join("alertmanager.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting alertmanager");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let text = read_log();
            let port = text
                .lines()
                .find(|l| l.contains("Listening on"))
                .and_then(|l| l.split("address=127.0.0.1:").nth(1))
                .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(p) = port {
                break p;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "alertmanager exited: {text}"
            );
            assert!(
                Instant::now() < deadline,
                "alertmanager did not listen within 60 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while get(port, "/-/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "alertmanager did not become ready: {}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Alertmanager {
            port,
            child,
            _dir: dir,
        }
    }

    fn json(&self, path: &str) -> Value {
        let (code, body) = get(self.port, path).expect("alertmanager answers");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

#[test]
#[ignore = "needs Prometheus Alertmanager: run tests/run-all.sh"]
fn two_monitors_reporting_one_device_make_one_alert() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let channel = format!("[[notify]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{}\"\nmin_severity = \"warning\"\n", am.port);
    let web01 = Monitor::new(&emu.socket, &channel);
    let web02 = Monitor::new(&emu.socket, &channel);
    assert_eq!(web01.check().code, 0);
    assert_eq!(web02.check().code, 0);

    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nFLEETCNTRL",
        "fleet-intruder",
        6202,
        "100.101.1.123",
    );
    emu.set_status(doc);
    let (a, b) = (web01.check(), web02.check());
    assert_eq!((a.code, b.code), (2, 2), "{a:?} {b:?}");

    let alerts = am.json("/api/v2/alerts?filter=event%3D%22device.new%22");
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "deduplicated across monitors: {alerts:#?}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "TailscaleMonitor");
    assert_eq!(labels["event"], "device.new");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["device_id"], "nFLEETCNTRL");
    assert_eq!(labels["tailnet"], "alice@example.com");
    assert!(alerts[0]["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("fleet-intruder"));

    let groups = am.json("/api/v2/alerts/groups");
    let device_groups: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["labels"]["event"] == "device.new")
        .collect();
    assert_eq!(device_groups.len(), 1, "{groups:#?}");
    assert_eq!(device_groups[0]["alerts"].as_array().unwrap().len(), 1);
}

#[test]
#[ignore = "needs promtool (Debian package prometheus): run tests/run-all.sh"]
fn metrics_pass_promtool_and_healthz_reports_the_source() {
    let promtool = std::env::var("TM_PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into());
    assert!(
        std::path::Path::new(&promtool).exists(),
        "promtool is not installed ({promtool}): run tests/setup/install-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(
        &emu.socket,
        "[daemon]\ngrace = \"1s\"\ninterval = \"300ms\"\n",
    );
    let (_daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    let (code, body) = get(port, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    for want in [
        "tailscale_monitor_devices 5",
        "tailscale_monitor_users 3",
        "tailscale_monitor_events_total{kind=\"monitor.baseline\"} 1",
        "tailscale_monitor_source_up 1",
        "# TYPE tailscale_monitor_outbox_depth gauge",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(port, "/healthz").unwrap().0, 200);

    emu.stop();
    assert!(
        mon.wait_for_event("monitor.source_down", 60),
        "{:?}",
        mon.run(&["events"])
    );
    let (code, body) = get(port, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no such socket"), "{body}");
    assert!(get(port, "/metrics")
        .unwrap()
        .1
        .contains("tailscale_monitor_source_up 0"));
}

/// F16: with `[metrics] token_file`, a scrape without the token gets 401 and nothing else.
#[test]
fn metrics_want_the_bearer_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let token = support::secret_file(dir.path(), "metrics-token", "s3cr3t-scrape");
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    );
    let (_daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    for path in ["/metrics", "/healthz"] {
        let (code, body) = get(port, path).unwrap();
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains("tailscale_monitor"), "{body}");
        let (code, _) =
            support::http_get_with(port, path, "Authorization: Bearer wrong\r\n").unwrap();
        assert_eq!(code, 401, "{path}");
    }
    let (code, body) =
        support::http_get_with(port, "/metrics", "Authorization: Bearer s3cr3t-scrape\r\n")
            .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("tailscale_monitor_devices 5"), "{body}");
}
