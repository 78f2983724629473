#!/usr/bin/env bash
# The guard's poll at its worst: 16,384 blocked sources per family offered to the `seen` sets,
# then one `guard_read` through the root side, timed, with the root side's peak memory (its
# process and its `nft` children, in a memory cgroup limited like the unit's MemoryMax=128M).
# Baseline in the same run: the earlier design's read, `nft -j list table` of the whole table,
# in a cgroup of its own.
#
#   sudo bench/guard_read.sh [ROUNDS]      (root, nftables, socat; cgroup v1 or v2 memory)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=${TSM_BIN:-target/release/tailscale-monitor}
[ -x "$bin" ] || cargo build --release --locked
ns=tmbench-guard-$$
dir=$(mktemp -d)
cg=""
cleanup() {
  [ -n "${relay:-}" ] && kill "$relay" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  [ -n "$cg" ] && rmdir "$cg"/relay "$cg"/nft "$cg" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" ip tuntap add dev tailscale0 mode tun
ip -n "$ns" link set tailscale0 up

# The root side's records: initialized, one approved address; its config: enforce.
chmod 0755 "$dir"
mkdir -m 0700 "$dir/state"
printf '[guard]\nmode = "enforce"\n' > "$dir/config.toml"
cat > "$dir/state/guard.json" <<'EOF'
{"approvals":[],"initialized":"2026-12-07T00:00:00Z","version":1,
 "applied":{"interface":"tailscale0","set":{"v4":["100.64.0.2/32"],"v6":[]},"structure":null,"boot_id":""}}
EOF
ip netns exec "$ns" "$bin" --config "$dir/config.toml" privileged --restore --state-dir "$dir/state" 2>/dev/null

# 16,384 sources per family offered to the records, as the kernel's dynset would add them
# (the sets take what their size allows; the rest is refused, as packets would be).
python3 - "$dir/fill.nft" <<'EOF'
import sys
out = open(sys.argv[1], "w")
for i in range(16384):
    a = 0x0a000000 + i
    out.write("add element inet tailscale_monitor_guard seen4 { %d.%d.%d.%d . tcp . 22 }\n" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255))
    out.write("add element inet tailscale_monitor_guard seen6 { fd00::%x . tcp . 22 }\n" % i)
EOF
split -l 512 "$dir/fill.nft" "$dir/part."
for p in "$dir"/part.*; do ip netns exec "$ns" nft -f "$p" 2>/dev/null || true; done
held4=$(ip netns exec "$ns" nft -j list set inet tailscale_monitor_guard seen4 | grep -o '"elem"' | wc -l)
count=$(ip netns exec "$ns" nft list set inet tailscale_monitor_guard seen4 | grep -o ' \. tcp \. 22' | wc -l)
count6=$(ip netns exec "$ns" nft list set inet tailscale_monitor_guard seen6 | grep -o ' \. tcp \. 22' | wc -l)
: "$held4"

# Memory cgroups (v1 here; v2 where mounted so), limited like the unit.
if [ -d /sys/fs/cgroup/memory ]; then
  cg=/sys/fs/cgroup/memory/tmbench-$$; mkdir -p "$cg/relay" "$cg/nft"
  for g in relay nft; do echo $((128 << 20)) > "$cg/$g/memory.limit_in_bytes"; done
  peak() { cat "$cg/$1/memory.max_usage_in_bytes"; }
  fails() { cat "$cg/$1/memory.failcnt"; }
else
  cg=/sys/fs/cgroup/tmbench-$$; mkdir -p "$cg/relay" "$cg/nft"
  for g in relay nft; do echo $((128 << 20)) > "$cg/$g/memory.max"; done
  peak() { cat "$cg/$1/memory.peak"; }
  fails() { grep -o 'max [0-9]*' "$cg/$1/memory.events" | cut -d' ' -f2; }
fi

sock="$dir/privileged.sock"
sh -c "echo \$\$ > $cg/relay/cgroup.procs; exec ip netns exec $ns $bin --config $dir/config.toml privileged --listen $sock --group root --state-dir $dir/state --socket /nonexistent" 2>/dev/null &
relay=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

echo "root side's peak RSS before any read: $(awk '/VmHWM/ {print int($2/1024)}' /proc/$relay/status) MiB"
ms() { python3 -c 'import sys,time; print(int(time.time()*1000))'; }
read_times=() base_times=()
for _ in $(seq "$rounds"); do
  t0=$(ms)
  ans=$(echo '{"v":3,"op":"guard_read"}' | socat -T30 - "UNIX-CONNECT:$sock")
  read_times+=($(( $(ms) - t0 )))
  case "$ans" in *'"blocked"'*) ;; *) echo "guard_read failed: ${ans:0:300}" >&2; exit 1 ;; esac
  t0=$(ms)
  sh -c "echo \$\$ > $cg/nft/cgroup.procs; exec ip netns exec $ns nft -j list table inet tailscale_monitor_guard" >/dev/null
  base_times+=($(( $(ms) - t0 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "sources offered: 16384 per family; held: seen4 $count, seen6 $count6"
echo "root side's own peak RSS (VmHWM): $(awk '/VmHWM/ {print int($2/1024)}' /proc/$relay/status) MiB"
echo "guard_read through the root side: median $(median "${read_times[@]}") ms over $rounds; peak memory $(( $(peak relay) >> 20 )) MiB (limit 128 MiB, hits: $(fails relay))"
echo "baseline, nft -j list table alone: median $(median "${base_times[@]}") ms; peak memory $(( $(peak nft) >> 20 )) MiB (limit 128 MiB, hits: $(fails nft))"
