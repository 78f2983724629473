#!/usr/bin/env python3
"""Writes a `tailscale status --json` document with N peers, field for field like tailscaled 1.102.

usage: gen-status.py N [SEED_SHIFT]   (SEED_SHIFT > 0 makes 1% of peers new and 1% re-keyed)
"""
import json, sys

n = int(sys.argv[1])
shift = int(sys.argv[2]) if len(sys.argv) > 2 else 0
users = max(1, n // 4)

def peer(i, rekey=False):
    key = "nodekey:%064x" % ((i << 8) | (1 if rekey else 0))
    a, b = divmod(i + 2, 250)
    ip = "100.%d.%d.%d" % (64 + a // 250, a % 250, b + 1)
    return key, {
        "ID": "n%010dCNTRL" % i, "NodeID": i, "PublicKey": key,
        "HostName": "host-%d" % i, "DNSName": "host-%d.tail1a2b3c.ts.net." % i,
        "OS": ["linux", "windows", "macOS", "iOS", "android"][i % 5],
        "UserID": 1000 + i % users, "TailscaleIPs": [ip, "fd7a:115c:a1e0::%x" % i],
        "AllowedIPs": [ip + "/32", "fd7a:115c:a1e0::%x/128" % i],
        "Addrs": ["203.0.113.%d:41641" % (i % 250)], "CurAddr": "", "Relay": "fra", "PeerRelay": "",
        "RxBytes": i * 7, "TxBytes": i * 11, "Created": "2026-03-02T10:11:12.123456789Z",
        "LastWrite": "2026-11-24T09:58:01.5Z", "LastSeen": "0001-01-01T00:00:00Z",
        "LastHandshake": "2026-11-24T09:57:30.1Z", "Online": True, "ExitNode": False,
        "ExitNodeOption": False, "Active": i % 3 == 0,
        "PeerAPIURL": ["http://%s:53211" % ip], "TaildropTarget": 1, "NoFileSharingReason": "",
        "Capabilities": ["https://tailscale.com/cap/file-sharing"],
        "CapMap": {"https://tailscale.com/cap/file-sharing": None},
        "InNetworkMap": True, "InMagicSock": True, "InEngine": True,
        "KeyExpiry": "2027-02-01T10:11:12Z",
    }

peers = {}
for i in range(1, n + 1):
    changed = shift and i % 100 == 0
    if changed:
        k, p = peer(i + 10_000_000)  # a new device replaces this one
    else:
        k, p = peer(i, rekey=bool(shift) and i % 100 == 1)
    peers[k] = p
_, self_ = peer(0)
self_["Tags"] = ["tag:server"]
doc = {
    "Version": "1.102.3-t1e2a3b4c5-g6d7e8f9a0", "TUN": True, "BackendState": "Running",
    "HaveNodeKey": True, "AuthURL": "", "TailscaleIPs": self_["TailscaleIPs"], "Self": self_,
    "Health": [], "MagicDNSSuffix": "tail1a2b3c.ts.net",
    "CurrentTailnet": {"Name": "example.com", "MagicDNSSuffix": "tail1a2b3c.ts.net", "MagicDNSEnabled": True},
    "CertDomains": None, "Peer": peers,
    "User": {str(1000 + u): {"ID": 1000 + u, "LoginName": "user%d@example.com" % u, "DisplayName": "User %d" % u}
             for u in range(users)},
    "ClientVersion": {"RunningLatest": True},
}
json.dump(doc, sys.stdout, indent="\t")
