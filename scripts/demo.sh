#!/usr/bin/env bash
# scripts/demo.sh — show the brouter suite working, inside throwaway network namespaces.
#
# Topology (every namespace is created here, named with this shell's PID, and deleted on exit;
# the machine's root network namespace is never touched):
#
#   guest1 (10.98.98.11, fd00:98::11) --vif1.0--+
#                                               +-- brdemo0 [dom0] 10.98.98.1/24 fd00:98::1/64
#   guest2 (10.98.98.12, fd00:98::12) --vif2.0--+      |  nat: masquerade out of up0
#                                                    up0 192.0.2.1/24 2001:db8:1::1/64
#                                                     |
#                                          outside  eth0 192.0.2.2/24 2001:db8:1::2/64
#                                          (no IPv4 route back to 10.98.98.0/24: replies only
#                                           arrive thanks to NAT; IPv6 is routed, not NATed)
#
# Last, a second host: dom0 --ul0 198.51.100.1/24 -- 198.51.100.2/24 eth0-- host2, each with a
# network "span" (brspan, 10.77.0.1/24) joined by a VXLAN overlay, and a guest behind each.
#
# Usage (as root, after `make build`):  scripts/demo.sh      or simply:  make demo
# Env: BINDIR (default: bin) — where the built programs are.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BINDIR=${BINDIR:-bin}
case "$BINDIR" in /*) ;; *) BINDIR=$REPO/$BINDIR ;; esac

# ---------------------------------------------------------------------------------------
# Output helpers.
# ---------------------------------------------------------------------------------------
if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' G='' R='' N=''; fi
section() { printf '\n%s==== %s ====%s\n' "$B" "$*" "$N"; }
step()    { printf '\n%s--- %s%s\n' "$B" "$*" "$N"; }
ok()      { printf '%sOK%s   %s\n' "$G" "$N" "$*"; }
fail()    { printf '%sFAIL%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
run()     { printf '$ %s\n' "$*"; "$@"; }   # show a command, then run it

# On an unexpected failure: name the failing command and the script line that led to it.
on_err() {
	local n=${#BASH_LINENO[@]} line=$1
	[ "$n" -ge 2 ] && line=${BASH_LINENO[n - 2]}
	printf '%sFAIL%s demo stopped at line %s: command failed: %s\n' "$R" "$N" "$line" "$2" >&2
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

[ "$(id -u)" -eq 0 ] || fail "the demo creates network namespaces: run it as root (e.g. sudo make demo)"
NV=$BINDIR/network-virtual
VIF=$BINDIR/vif-brouter
for prog in network-virtual vif-brouter qemu-ifup brouter host-local; do
	[ -x "$BINDIR/$prog" ] || fail "$BINDIR/$prog not found: run 'make build' first (or 'make demo')"
done
for tool in ip nft ping xenstore-write xenstore-read; do
	command -v "$tool" >/dev/null || fail "$tool not found: run scripts/setup.sh as root"
done

# ---------------------------------------------------------------------------------------
# Throwaway namespaces and files; removed on any exit.
# ---------------------------------------------------------------------------------------
DOM0=brdemo-dom0-$$
OUTSIDE=brdemo-out-$$
GUEST1=brdemo-g1-$$
GUEST2=brdemo-g2-$$
CREATED_NS=()
TMP=$(mktemp -d /tmp/brouter-demo.XXXXXX)
chmod 755 "$TMP" # dnsmasq drops root and must reach its files under it

cleanup() {
	local rc=$? ns pid
	trap - ERR
	set +e
	[ -n "${XSD_PID:-}" ] && kill "$XSD_PID" 2>/dev/null
	for ns in "${CREATED_NS[@]}"; do
		# Processes running in our namespaces (e.g. a DHCP server a program started) were
		# started by this demo; end them by PID before the namespace goes.
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
		ip netns delete "$ns" 2>/dev/null
	done
	rm -rf "$TMP"
	if [ "$rc" -eq 0 ]; then
		printf '\n%sdemo: all steps passed%s (namespaces and temp files removed)\n' "$G" "$N"
	else
		printf '\n%sdemo: FAILED (exit %d)%s (namespaces and temp files removed)\n' "$R" "$rc" "$N" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkns() {
	ip netns add "$1"
	CREATED_NS+=("$1")
	ip -n "$1" link set lo up
	# No duplicate address detection in these private namespaces: addresses are usable at
	# once and listings do not change while DAD runs.
	ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

in_dom0() { ip netns exec "$DOM0" "$@"; }

# The brouter programs run in dom0 with a private config and private state directories.
export BROUTER_CONFIG=$TMP/brouter.toml
export BROUTER_RUN_DIR=$TMP/run
export BROUTER_STATE_DIR=$TMP/state
# run_dir and state_dir are in the config too: the setuid bridge helper takes nothing from
# the environment of the unprivileged user who runs it.
printf 'run_dir = "%s"\nstate_dir = "%s"\n' "$BROUTER_RUN_DIR" "$BROUTER_STATE_DIR" >"$BROUTER_CONFIG"
cat >>"$BROUTER_CONFIG" <<'TOML'
default_network = "demo"

[network.demo]
bridge = "brdemo0"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
mode = "nat"
allow_users = ["nobody"]  # who may attach guests through the bridge helper (root always may)

[network.demo.dhcp]
domain = "demo.internal"

[[network.demo.dhcp.host]]
mac = "00:16:3e:00:00:09"
ip = "10.98.98.9"
name = "printer"

# Policy: port 2222 of the host forwarded to guest1's port 22 (a VM, no container needed),
# and no mail (tcp/25) from any guest to the outside.
[[network.demo.forward]]
proto = "tcp"
host_port = "2222"
guest = "10.98.98.11"
guest_port = "22"

[network.demo.outgoing]
default = "allow"
[[network.demo.outgoing.deny]]
proto = "tcp"
port = "25"
TOML

# snapshot FILE: everything network-virtual may change in dom0, for a before/after diff.
snapshot() {
	{
		echo "## ip -br link";     ip -n "$DOM0" -br link
		# Without the root qdisc's name: a device that was ever up keeps "noqueue" where a
		# never-up one shows "noop"; that is the kernel's, not something brouter left.
		echo "## ip addr";         ip -n "$DOM0" addr | sed 's/ qdisc [a-z_]*//'
		echo "## tc qdisc (not default)"; ip netns exec "$DOM0" tc qdisc show | grep -vE 'qdisc (noqueue|noop|pfifo_fast|fq_codel) 0: ' || true
		echo "## ip -4 route";     ip -n "$DOM0" -4 route
		echo "## ip -6 route";     ip -n "$DOM0" -6 route
		echo "## ip rule";         ip -n "$DOM0" rule; ip -n "$DOM0" -6 rule
		echo "## nft list ruleset"; in_dom0 nft list ruleset
		if command -v iptables-save >/dev/null; then
			echo "## iptables-save";  in_dom0 iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]$//' || true
			echo "## ip6tables-save"; in_dom0 ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]$//' || true
		fi
	} >"$1" 2>&1
}

# nft_counter NS NAME: packets seen by the named counter in table ip brdemo.
nft_counter() {
	ip netns exec "$1" nft list counter ip brdemo "$2" | awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

# =======================================================================================
section "Topology: namespaces dom0, outside, guest1, guest2 (suffix -$$)"
# =======================================================================================
mkns "$DOM0"; mkns "$OUTSIDE"; mkns "$GUEST1"; mkns "$GUEST2"

# dom0's uplink and the outside host beyond it (documentation ranges only).
ip -n "$DOM0" link add up0 type veth peer name eth0 netns "$OUTSIDE"
ip -n "$DOM0" addr add 192.0.2.1/24 dev up0
ip -n "$DOM0" addr add 2001:db8:1::1/64 dev up0
ip -n "$DOM0" link set up0 up
ip -n "$DOM0" route add default via 192.0.2.2
ip -n "$DOM0" -6 route add default via 2001:db8:1::2
ip -n "$OUTSIDE" addr add 192.0.2.2/24 dev eth0
ip -n "$OUTSIDE" addr add 2001:db8:1::2/64 dev eth0
ip -n "$OUTSIDE" link set eth0 up
# The outside host knows a route to the guests' IPv6 network (routed, no NAT), but none to
# 10.98.98.0/24: IPv4 replies can only reach the guests through dom0's masquerade.
ip -n "$OUTSIDE" -6 route add fd00:98::/64 via 2001:db8:1::1

# Guests: one veth pair each; the dom0 end (vifN) will be put on the bridge.
n=0
for g in "$GUEST1" "$GUEST2"; do
	n=$((n + 1))
	# A Xen PV guest's NIC, played by a veth: netback names the dom0 end vif<domid>.<devid>
	# and gives it MAC fe:ff:ff:ff:ff:ff; the guest's own MAC is 00:16:3e:...
	ip -n "$g" link add eth0 type veth peer name "vif$n.0" netns "$DOM0"
	ip -n "$DOM0" link set "vif$n.0" address fe:ff:ff:ff:ff:ff
	ip -n "$g" link set eth0 address "00:16:3e:00:00:0$n"
	ip -n "$g" addr add "fd00:98::1$n/64" dev eth0
	# Static guests (their vifs' ip= pins them to these addresses): no SLAAC address from the
	# network's router advertisements, which guest3 uses below.
	ip netns exec "$g" sysctl -qw net.ipv6.conf.eth0.autoconf=0
	ip -n "$g" link set eth0 up
	ip -n "$g" -6 route add default via fd00:98::1
	if [ "$n" = 1 ]; then # guest2 takes its IPv4 address by DHCP, below
		ip -n "$g" addr add "10.98.98.1$n/24" dev eth0
		ip -n "$g" route add default via 10.98.98.1
	fi
done

# The outside host counts what arrives, by source address.
ip netns exec "$OUTSIDE" nft -f - <<'NFT'
table ip brdemo {
	counter from_dom0_uplink {}
	counter from_guest_net {}
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr 192.0.2.1 icmp type echo-request counter name from_dom0_uplink
		ip saddr 10.98.98.0/24 counter name from_guest_net
	}
}
NFT
run ip -n "$DOM0" -br addr
run ip -n "$DOM0" route
echo "config ($BROUTER_CONFIG):"; sed 's/^/    /' "$BROUTER_CONFIG"

# A real host already has iptables' built-in chains (iptables-nft creates them, empty with
# policy ACCEPT, the first time a rule goes into a table, and never removes them; they are not
# brouter's). Create the ones brouter's rules hook into, with the policy they already have, so
# that the before/after diff shows only what brouter itself adds and removes.
if command -v iptables >/dev/null; then
	in_dom0 iptables -t filter -P FORWARD ACCEPT
	in_dom0 iptables -t nat -P POSTROUTING ACCEPT
	in_dom0 ip6tables -t filter -P FORWARD ACCEPT
fi
snapshot "$TMP/before"

# =======================================================================================
section "network-virtual: start the network \"demo\" in dom0"
# =======================================================================================
step "start"
run ip netns exec "$DOM0" "$NV" start net=demo
step "start again (idempotent)"
run ip netns exec "$DOM0" "$NV" start net=demo
# =======================================================================================
section "vif-brouter: Xen brings the guests' vifs online"
# =======================================================================================
# No Xen here: a xenstore double speaks the wire protocol on a socket, and libxl's part is
# played by writing the backend keys libxl writes and running vif-brouter exactly as libxl
# runs it (argv "online type_if=vif", a bare environment).
export XENSTORED_PATH=$TMP/xenstored.sock
"$BINDIR/xenstored-double" "$XENSTORED_PATH" & XSD_PID=$!
for i in $(seq 50); do [ -S "$XENSTORED_PATH" ] && break; sleep 0.05; done
libxl_vif() { # libxl_vif DOMID OP: run vif-brouter for vif DOMID.0 as libxl does
	run ip netns exec "$DOM0" env -i XENSTORED_PATH="$XENSTORED_PATH" BROUTER_CONFIG="$BROUTER_CONFIG" \
		BROUTER_RUN_DIR="$BROUTER_RUN_DIR" BROUTER_STATE_DIR="$BROUTER_STATE_DIR" \
		script=/etc/xen/scripts/vif-brouter XENBUS_TYPE=vif XENBUS_PATH="backend/vif/$1/0" \
		XENBUS_BASE_PATH=backend netdev= vif="vif$1.0" "$VIF" "$2" type_if=vif </dev/null
}
for d in 1 2; do
	be=/local/domain/0/backend/vif/$d/0
	xenstore-write "$be/frontend" "/local/domain/$d/device/vif/0" "$be/frontend-id" "$d" \
		"$be/online" 1 "$be/state" 2 "$be/script" /etc/xen/scripts/vif-brouter \
		"$be/mac" "00:16:3e:00:00:0$d" "$be/bridge" brdemo0 "$be/handle" 0 "$be/type" vif \
		"$be/hotplug-status" "" "$be/ip" "10.98.98.1$d fd00:98::1$d"
done
# Guest 2's vif has a rate limit (xl: rate=10Mb/s; libxl writes bytes per interval).
xenstore-write /local/domain/0/backend/vif/2/0/rate 1250000,1000000
echo "backend keys of vif1.0 (as libxl writes them):"
XENSTORED_PATH=$XENSTORED_PATH xenstore-ls -f /local/domain/0/backend/vif/1/0 | sed 's/^/    /'
step "vif-brouter online, for each vif"
libxl_vif 1 online
libxl_vif 2 online
for d in 1 2; do
	st=$(xenstore-read "/local/domain/0/backend/vif/$d/0/hotplug-status")
	[ "$st" = connected ] || fail "vif$d.0: hotplug-status=$st, want connected"
	ok "vif$d.0: hotplug-status=connected, frontend mtu=$(xenstore-read "/local/domain/$d/device/vif/0/mtu")"
done
step "guest2 asks for an address by DHCP (busybox udhcpc); its vif's ip= made it a static lease"
cat >"$TMP/udhcpc.sh" <<'SH'
#!/bin/sh
# udhcpc's hook: apply the lease (address, default route, resolver) inside the guest.
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
ip route add default via "$router"
echo "lease: $ip/$mask router $router dns $dns domain $domain"
SH
chmod 755 "$TMP/udhcpc.sh"
run ip netns exec "$GUEST2" busybox udhcpc -i eth0 -f -n -q -t 6 -T 2 -s "$TMP/udhcpc.sh"
ip -n "$GUEST2" -br addr show eth0 | grep -q '10\.98\.98\.12/24' || fail "guest2 did not get 10.98.98.12 by DHCP"
ok "guest2 got 10.98.98.12 from the network's dnsmasq (router and DNS: the bridge)"
printf '$ ip netns exec %s busybox nslookup printer.demo.internal 10.98.98.1\n' "$GUEST2"
ip netns exec "$GUEST2" busybox nslookup printer.demo.internal 10.98.98.1 | sed 's/^/    /'
ip netns exec "$GUEST2" busybox nslookup printer.demo.internal 10.98.98.1 | grep -q 10.98.98.9 || fail "printer.demo.internal did not resolve"
ok "a static host's name resolves through the DNS forwarder on the bridge"

step "status"
rc=0; run ip netns exec "$DOM0" "$NV" status net=demo || rc=$?
[ "$rc" -eq 0 ] || fail "status of a running network exited $rc, want 0"
ok "status exit 0 (running)"
step "status --json"
run ip netns exec "$DOM0" "$NV" --json status net=demo
step "what dom0 looks like now"
run ip -n "$DOM0" -br addr show dev brdemo0
run ip netns exec "$DOM0" nft list ruleset


# =======================================================================================
section "Traffic"
# =======================================================================================
ping_ok() { # ping_ok NS ADDR DESCRIPTION
	local ns=$1 addr=$2 what=$3
	printf '$ ip netns exec %s ping -c 3 -W 2 %s\n' "$ns" "$addr"
	if ip netns exec "$ns" ping -q -c 3 -i 0.2 -W 2 "$addr" | sed -n 's/^/    /; /packets transmitted/p'; [ "${PIPESTATUS[0]}" -eq 0 ]; then
		ok "$what"
	else
		fail "$what"
	fi
}
ping_ok "$GUEST1" 10.98.98.12     "guest1 -> guest2 (bridged)"
ping_ok "$GUEST1" 10.98.98.1      "guest1 -> gateway 10.98.98.1 (dom0)"
ping_ok "$GUEST1" 192.0.2.2       "guest1 -> outside 192.0.2.2 (NAT)"
ping_ok "$GUEST2" 192.0.2.2       "guest2 -> outside 192.0.2.2 (NAT)"
ping_ok "$GUEST1" fd00:98::12     "guest1 -> guest2 over IPv6"
ping_ok "$GUEST1" fd00:98::1      "guest1 -> gateway fd00:98::1"
ping_ok "$GUEST1" 2001:db8:1::2   "guest1 -> outside 2001:db8:1::2 (IPv6 routed, not NATed)"

step "antispoof: guest1 (ip=10.98.98.11) sends from an address it was not given"
run ip -n "$GUEST1" addr add 10.98.98.99/24 dev eth0
printf '$ ip netns exec %s ping -c 2 -W 1 -I 10.98.98.99 10.98.98.1\n' "$GUEST1"
if ip netns exec "$GUEST1" ping -q -c 2 -W 1 -I 10.98.98.99 10.98.98.1 >/dev/null 2>&1; then
	fail "a packet from the spoofed source 10.98.98.99 got through"
fi
ok "dropped: guest1 may only send from 00:16:3e:00:00:01 and 10.98.98.11 / fd00:98::11"
ip -n "$GUEST1" addr del 10.98.98.99/24 dev eth0

step "what the outside host saw (nft counters by source address)"
run ip netns exec "$OUTSIDE" nft list table ip brdemo
from_uplink=$(nft_counter "$OUTSIDE" from_dom0_uplink)
from_guests=$(nft_counter "$OUTSIDE" from_guest_net)
[ "${from_uplink:-0}" -gt 0 ] || fail "the outside host saw no echo request from dom0's uplink address 192.0.2.1"
[ "${from_guests:-0}" -eq 0 ] || fail "the outside host saw $from_guests packets from 10.98.98.0/24: not masqueraded"
ok "outside saw $from_uplink echo requests from 192.0.2.1 (dom0's uplink) and none from 10.98.98.0/24: masqueraded"

# =======================================================================================
section "IPv6: a guest configured by SLAAC; a rogue router's advertisements dropped"
# =======================================================================================
# The network sends router advertisements (address6 implies [network.demo.dhcp6], mode slaac):
# prefix, MTU, default route via the bridge's link-local address, the bridge as DNS (RDNSS).
ln -sf "$BINDIR/qemu-ifup" "$TMP/qemu-ifdown" # the same program by the name QEMU's downscript has
GUEST5=brdemo-g5-$$
mkns "$GUEST5"
ip -n "$GUEST5" link add eth0 type veth peer name tap-g5 netns "$DOM0"
ip -n "$GUEST5" link set eth0 address 00:16:3e:00:00:05
step "qemu-ifup attaches guest5's port (a veth playing a tap); guest5 configures itself from the RAs"
run ip netns exec "$DOM0" "$BINDIR/qemu-ifup" tap-g5 brdemo0
ip -n "$GUEST5" link set eth0 up
slaac=
for i in $(seq 100); do
	slaac=$(ip -n "$GUEST5" -6 -o addr show dev eth0 scope global | awk '{print $4; exit}')
	[ -n "$slaac" ] && break
	sleep 0.1
done
run ip -n "$GUEST5" -6 addr show dev eth0 scope global
run ip -n "$GUEST5" -6 route show default
case "$slaac" in fd00:98::*/64) ;; *) fail "guest5 got no SLAAC address in fd00:98::/64 (got '$slaac')" ;; esac
ip -n "$GUEST5" -6 route show default | grep -q 'via fe80::.* proto ra' || fail "guest5 has no default route from the RAs"
ok "guest5: $slaac by SLAAC, default route via the bridge's link-local address"
ping_ok "$GUEST5" 2001:db8:1::2 "guest5 (SLAAC) -> outside 2001:db8:1::2"

step "guest1 runs a router of its own: a rogue dnsmasq advertising 2001:db8:bad::/64 (guest1's vif is guarded: ip=)"
ip -n "$GUEST1" -6 addr add 2001:db8:bad::1/64 dev eth0
printf '$ ip netns exec %s dnsmasq --enable-ra --dhcp-range=2001:db8:bad::,ra-only,64 --interface=eth0 ...\n' "$GUEST1"
ip netns exec "$GUEST1" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv --no-hosts \
	--interface=eth0 --bind-interfaces --enable-ra --dhcp-range=2001:db8:bad::,ra-only,64 --ra-param=eth0,4 \
	--user=root --pid-file="$TMP/rogue.pid" --dhcp-leasefile="$TMP/rogue.leases" \
	--log-dhcp --log-facility="$TMP/rogue.log" & ROGUE_PID=$!
sleep 1
ip -n "$GUEST5" link set eth0 down; ip -n "$GUEST5" link set eth0 up # guest5 solicits routers again
sleep 5
kill "$ROGUE_PID"; wait "$ROGUE_PID" 2>/dev/null || true
sent=$(grep -c 'RTR-ADVERT(eth0) 2001:db8:bad::' "$TMP/rogue.log" || true)
echo "guest1's dnsmasq log: $sent router advertisements for 2001:db8:bad::/64 sent"
[ "${sent:-0}" -gt 0 ] || fail "the rogue dnsmasq sent no router advertisement (the demo is broken)"
run ip -n "$GUEST5" -6 addr show dev eth0 scope global
run ip -n "$GUEST5" -6 route show default
if ip -n "$GUEST5" -6 addr show dev eth0 | grep -q 2001:db8:bad || ip -n "$GUEST5" -6 route | grep -q 2001:db8:bad; then
	fail "guest5 took the rogue router's advertisement"
fi
echo "the guard, in dom0 (nft table bridge brouter-demo, first rules of guest ports' IPv6 chain):"
in_dom0 nft list chain bridge brouter-demo antispoof_ip6 | grep -E 'nd-router-advert|547|nd-neighbor' | sed 's/^\s*/    /'
ok "dropped: guest5 took no address or route from guest1's router advertisements (RA guard)"
ip -n "$GUEST1" -6 addr del 2001:db8:bad::1/64 dev eth0
run ip netns exec "$DOM0" "$TMP/qemu-ifdown" tap-g5
ip -n "$DOM0" link del tap-g5

# =======================================================================================
section "qemu-ifup: a real QEMU guest (TCG) joins the same network"
# =======================================================================================
if command -v qemu-system-x86_64 >/dev/null && [ -x "$BINDIR/qemu-guest" ]; then
	# The guest: Debian's cloud kernel and a busybox initramfs, assembled from Debian packages
	# (cached under /var/cache/brouter-e2e). Its /init takes a DHCP lease, pings, resolves a
	# name, prints BRTEST lines and powers off; QEMU then runs the downscript.
	mapfile -t QEMU_ARGS < <("$BINDIR/qemu-guest" -tap tap-demo -ifup "$BINDIR/qemu-ifup" -ifdown "$TMP/qemu-ifdown" \
		-mac 00:16:3e:00:00:30 -append "brtest.ping=10.98.98.1,192.0.2.2 brtest.resolve=printer.demo.internal brtest.ipv6=slaac brtest.ping6=fd00:98::1,2001:db8:1::2")
	printf '$ ip netns exec %s %s\n' "$DOM0" "${QEMU_ARGS[*]}"
	if BROUTER_NETWORK=demo timeout 120 ip netns exec "$DOM0" "${QEMU_ARGS[@]}" </dev/null >"$TMP/qemu.log" 2>&1; then
		grep '^BRTEST' "$TMP/qemu.log" | sed 's/^/    /'
		grep -q '^BRTEST ping 192.0.2.2 ok' "$TMP/qemu.log" || fail "the QEMU guest could not reach the outside host"
		grep -q '^BRTEST resolve printer.demo.internal 10.98.98.9' "$TMP/qemu.log" || fail "the QEMU guest could not resolve printer.demo.internal"
		grep -q '^BRTEST addr6 fd00:98::' "$TMP/qemu.log" || fail "the QEMU guest got no SLAAC address"
		grep -q '^BRTEST ping6 2001:db8:1::2 ok' "$TMP/qemu.log" || fail "the QEMU guest could not reach the outside host over IPv6"
		ip -n "$DOM0" link show tap-demo >/dev/null 2>&1 && fail "tap-demo is still there after the guest powered off"
		ok "QEMU guest: DHCP lease, SLAAC address, gateway and outside (NAT, IPv6 routed) reached, name resolved; after poweroff qemu-ifdown left nothing"
	else
		tail -20 "$TMP/qemu.log" >&2
		fail "the QEMU guest failed (console above)"
	fi
else
	echo "(qemu-system-x86_64 not installed: skipping the QEMU guest; scripts/setup.sh installs it)"
fi

# =======================================================================================
section "bridge-helper: an unprivileged user's QEMU guest joins the same network"
# =======================================================================================
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if command -v qemu-system-x86_64 >/dev/null && [ -x "$BINDIR/qemu-guest" ] && [ -x "$GO" ] && command -v setpriv >/dev/null; then
	# make install puts the helper in $PREFIX/lib/brouter, setuid root, reading
	# /etc/brouter/brouter.toml; the demo's copy reads the demo's config instead.
	mkdir -m 755 "$TMP/helper"
	(cd "$REPO" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-X main.hostConfig=$BROUTER_CONFIG" \
		-o "$TMP/helper/bridge-helper" ./hooks/bridge-helper)
	chmod 4755 "$TMP/helper/bridge-helper"
	run ls -l "$TMP/helper/bridge-helper"
	AS_NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	mapfile -t QEMU_ARGS < <("$BINDIR/qemu-guest" -bridge brdemo0 -helper "$TMP/helper/bridge-helper" \
		-mac 00:16:3e:00:00:31 -append "brtest.ping=10.98.98.1,192.0.2.2")

	step "a user the network does not allow (uid 65533): the helper refuses, QEMU does not start"
	printf '$ ip netns exec %s setpriv --reuid=65533 ... %s\n' "$DOM0" "${QEMU_ARGS[*]}"
	if timeout 60 ip netns exec "$DOM0" setpriv --reuid=65533 --regid=65533 --clear-groups "${QEMU_ARGS[@]}" </dev/null >"$TMP/qemu-denied.log" 2>&1; then
		fail "QEMU started for a user the network does not allow"
	fi
	grep '^bridge-helper: ' "$TMP/qemu-denied.log" | sed 's/^/    /'
	grep -q 'may not attach guests to network demo' "$TMP/qemu-denied.log" || fail "no refusal from the bridge helper (log above)"
	ok "refused, with the network, the user and where to allow it"

	step "nobody (allow_users = [\"nobody\"]) runs QEMU with -netdev bridge,br=brdemo0,helper=..."
	printf '$ ip netns exec %s %s %s\n' "$DOM0" "${AS_NOBODY[*]}" "${QEMU_ARGS[*]}"
	if timeout 120 ip netns exec "$DOM0" "${AS_NOBODY[@]}" "${QEMU_ARGS[@]}" </dev/null >"$TMP/qemu-user.log" 2>&1; then
		grep '^BRTEST' "$TMP/qemu-user.log" | sed 's/^/    /'
		grep -q '^BRTEST ping 192.0.2.2 ok' "$TMP/qemu-user.log" || fail "nobody's guest could not reach the outside host"
		ok "nobody's guest: a tap named after its uid (tap65534.0), DHCP lease, gateway and outside (NAT) reached"
	else
		tail -20 "$TMP/qemu-user.log" >&2
		fail "nobody's QEMU guest failed (console above)"
	fi
	step "the tap went with QEMU (no downscript); reconcile removes what is left of it"
	run ip netns exec "$DOM0" "$NV" reconcile net=demo
	[ -e "$BROUTER_RUN_DIR/ports/demo/tap65534.0.json" ] && fail "tap65534.0's record is still there after reconcile"
	ok "nothing left of tap65534.0"
else
	echo "(qemu-system-x86_64, setpriv or go missing: skipping the unprivileged guest)"
fi

# =======================================================================================
section "CNI: a container joins the same network"
# =======================================================================================
# What containerd or CRI-O do: run /opt/cni/bin/brouter with CNI_* in the environment and the
# network config on stdin; IPAM is delegated to host-local, found in CNI_PATH.
CTR=brdemo-ctr-$$
mkns "$CTR"
mkdir -p "$TMP/cni"
cp "$BINDIR/brouter" "$BINDIR/host-local" "$TMP/cni/"
cat >"$TMP/cni/net.json" <<JSON
{ "cniVersion": "1.1.0", "name": "demo", "type": "brouter", "network": "demo",
  "runtimeConfig": { "bandwidth": { "ingressRate": 20000000, "egressRate": 20000000 },
                     "portMappings": [ { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" } ] },
  "ipam": { "type": "host-local", "dataDir": "$TMP/cni/ipam",
            "ranges": [[ { "subnet": "10.98.98.0/24", "rangeStart": "10.98.98.60", "rangeEnd": "10.98.98.69", "gateway": "10.98.98.1" } ]] } }
JSON
cni() { # cni VERB [CONFIG]: run the plugin as a runtime does, for container "demo-ctr"
	ip netns exec "$DOM0" env CNI_COMMAND="$1" CNI_CONTAINERID=demo-ctr CNI_NETNS="/run/netns/$CTR" \
		CNI_IFNAME=eth0 CNI_PATH="$TMP/cni" "$TMP/cni/brouter" <"${2:-$TMP/cni/net.json}"
}
step "CNI ADD (container netns $CTR, IPAM host-local, 20 Mbit/s each way, host port 8080 -> container port 80)"
printf '$ CNI_COMMAND=ADD CNI_IFNAME=eth0 ... /opt/cni/bin/brouter < net.json\n'
cni ADD >"$TMP/cni/add.json"
sed 's/^/    /' "$TMP/cni/add.json"; echo
# CHECK and DEL get the ADD result as prevResult, as runtimes pass it.
{ printf '{ "prevResult": '; cat "$TMP/cni/add.json"; printf ','; tail -c +2 "$TMP/cni/net.json"; } >"$TMP/cni/prev.json"
CTR_IP=$(ip -n "$CTR" -4 -o addr show dev eth0 | awk '{ print $4 }' | cut -d/ -f1)
[ -n "$CTR_IP" ] || fail "the container got no address"
ping_ok "$CTR" 10.98.98.11 "container $CTR_IP -> Xen guest1 10.98.98.11 (same bridge)"
ping_ok "$CTR" 192.0.2.2   "container -> outside 192.0.2.2 (NAT)"
step "the published port: a web server in the container, reached on dom0's port 8080"
mkdir -p "$TMP/www"; echo "hello from the container" >"$TMP/www/index.html"
ip netns exec "$CTR" busybox httpd -f -p 80 -h "$TMP/www" & # ended by cleanup (it runs in our netns)
for _ in 1 2 3 4 5 6 7 8 9 10; do ip netns exec "$CTR" busybox wget -q -O /dev/null http://127.0.0.1/ 2>/dev/null && break; sleep 0.2; done
fetch() { # fetch NS URL WHAT
	local got
	# (timeout, not wget -T: Debian 12's busybox-static wget crashes with -T)
	got=$(timeout 5 ip netns exec "$1" busybox wget -q -O - "$2" 2>&1) || fail "$3: wget $2 failed: $got"
	[ "$got" = "hello from the container" ] || fail "$3: $2 answered '$got'"
	ok "$3: wget $2 -> $got"
}
fetch "$OUTSIDE" http://192.0.2.1:8080/ "from the outside host"
fetch "$DOM0"    http://127.0.0.1:8080/ "from dom0 itself (localhost)"
fetch "$GUEST1"  http://10.98.98.1:8080/ "from Xen guest1 on the same bridge (hairpin)"
printf '$ nft list map inet brouter-demo.fwd fwd4any; nft list chain inet brouter-demo.fwd published\n'
printf '  (one map element per published port; the rules are the same for 1 or 1000 containers)\n'
{ in_dom0 nft list map inet brouter-demo.fwd fwd4any; in_dom0 nft list chain inet brouter-demo.fwd published; } |
	grep -vE '^(table|\})|^\s*$' | sed 's/^/    /'
step "status: the container's port, shaped like the Xen and QEMU guests"
in_dom0 "$NV" status net=demo | sed -n '/ports:/,/routes:/p'
step "CNI CHECK, DEL, DEL again"
cni CHECK "$TMP/cni/prev.json" || fail "CNI CHECK failed"
ok "CHECK against the ADD result"
cni DEL "$TMP/cni/prev.json" || fail "CNI DEL failed"
cni DEL "$TMP/cni/prev.json" || fail "the second CNI DEL failed"
ok "DEL twice"
ip -n "$DOM0" -br link | grep -q '^brv' && fail "the container's host veth is still there after DEL"
ok "the container's veth, rules and shaping are gone"
timeout 3 ip netns exec "$OUTSIDE" busybox wget -q -O - http://192.0.2.1:8080/ >/dev/null 2>&1 && fail "port 8080 still answers after DEL"
ok "port 8080 is no longer published"


# =======================================================================================
section "Policy: a forward to a VM, outgoing mail denied"
# =======================================================================================
mkdir -p "$TMP/www-g1" "$TMP/www-out"
echo "hello from guest1" >"$TMP/www-g1/index.html"
echo "hello from outside" >"$TMP/www-out/index.html"
ip netns exec "$GUEST1" busybox httpd -f -p 22 -h "$TMP/www-g1" &   # ended by cleanup
ip netns exec "$OUTSIDE" busybox httpd -f -p 25 -h "$TMP/www-out" &
ip netns exec "$OUTSIDE" busybox httpd -f -p 80 -h "$TMP/www-out" &
sleep 0.3
step "[[network.demo.forward]] tcp 2222 -> guest1:22, from the outside host and from dom0"
got=$(timeout 5 ip netns exec "$OUTSIDE" busybox wget -q -O - http://192.0.2.1:2222/ 2>&1) || fail "forward: $got"
[ "$got" = "hello from guest1" ] || fail "forward answered '$got'"
ok "outside: wget http://192.0.2.1:2222/ -> $got"
got=$(timeout 5 ip netns exec "$DOM0" busybox wget -q -O - http://127.0.0.1:2222/ 2>&1) || fail "forward from localhost: $got"
ok "dom0: wget http://127.0.0.1:2222/ -> $got"
step "[network.demo.outgoing] deny tcp/25: guest1 reaches the outside host's port 80, not its port 25"
got=$(timeout 5 ip netns exec "$GUEST1" busybox wget -q -O - http://192.0.2.2:80/ 2>&1) || fail "guest1 -> outside:80 failed: $got"
ok "guest1 -> 192.0.2.2:80 -> $got"
if timeout 3 ip netns exec "$GUEST1" busybox wget -q -O - http://192.0.2.2:25/ >/dev/null 2>&1; then
	fail "guest1 reached the outside host's port 25"
fi
ok "guest1 -> 192.0.2.2:25 is dropped"

# =======================================================================================
section "Self-healing: network-virtual watch, reconcile and doctor"
# =======================================================================================
step "network-virtual watch runs (systemd: brouter-watch.service); a firewall reload flushes the ruleset"
in_dom0 "$NV" watch 2>"$TMP/watch.log" &
WATCH_PID=$!
sleep 0.5 # its first look at every network
run ip netns exec "$DOM0" nft flush ruleset
healed=""
for _ in $(seq 1 50); do
	if ip netns exec "$GUEST1" ping -q -c 1 -W 0.2 192.0.2.2 >/dev/null 2>&1 &&
		in_dom0 nft list table bridge brouter-demo >/dev/null 2>&1 &&
		in_dom0 nft list set bridge brouter-demo as_ip4 2>/dev/null | grep -q 10.98.98.11; then
		healed=yes
		break
	fi
	sleep 0.1
done
sed 's/^/    watch: /' "$TMP/watch.log"
[ -n "$healed" ] || fail "the watcher did not repair the network within 5 s"
ok "repaired without any command: guest1 reaches the outside again, its antispoof entries are back"
ip -n "$GUEST1" addr add 10.98.98.99/24 dev eth0
if ip netns exec "$GUEST1" ping -q -c 1 -W 1 -I 10.98.98.99 10.98.98.1 >/dev/null 2>&1; then
	fail "after the repair a packet from the spoofed source 10.98.98.99 got through"
fi
ip -n "$GUEST1" addr del 10.98.98.99/24 dev eth0
ok "a spoofed packet is dropped again"
kill "$WATCH_PID"; wait "$WATCH_PID" 2>/dev/null || true
# What a reload of the host's firewall also removed: iptables' built-in chains (see the top).
if command -v iptables >/dev/null; then
	in_dom0 iptables -t filter -P FORWARD ACCEPT
	in_dom0 iptables -t nat -P POSTROUTING ACCEPT
	in_dom0 ip6tables -t filter -P FORWARD ACCEPT
fi

step "reconcile by hand: nothing is missing, so nothing changes"
run ip netns exec "$DOM0" "$NV" reconcile

step "doctor: a host firewall table whose forward chain has policy drop cuts the guests off"
run ip netns exec "$DOM0" "$NV" doctor
run ip netns exec "$DOM0" nft add table inet hostfw
run ip netns exec "$DOM0" nft 'add chain inet hostfw forward { type filter hook forward priority 0; policy drop; }'
ip netns exec "$GUEST1" ping -q -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 && fail "guest1 still reaches the outside through a policy drop"
rc=0; run ip netns exec "$DOM0" "$NV" doctor || rc=$?
[ "$rc" -eq 1 ] || fail "doctor exited $rc with a foreign policy drop, want 1"
ok "doctor names the chain and how to let the network through (exit 1)"
run ip netns exec "$DOM0" nft delete table inet hostfw
ping_ok "$GUEST1" 192.0.2.2 "guest1 -> outside again once that table is gone"

# =======================================================================================
section "network-virtual: stop, and check nothing is left behind"
# =======================================================================================
step "vif-brouter offline (Xen shuts the guests down)"
libxl_vif 1 offline
libxl_vif 2 offline
step "stop"
run ip netns exec "$DOM0" "$NV" stop net=demo
step "stop again (idempotent)"
run ip netns exec "$DOM0" "$NV" stop net=demo
step "status"
rc=0; run ip netns exec "$DOM0" "$NV" status net=demo || rc=$?
[ "$rc" -eq 3 ] || fail "status of a stopped network exited $rc, want 3 (not running)"
ok "status exit 3 (not running)"

step "diff of dom0's links, addresses, routes and firewall: before start vs after stop"
snapshot "$TMP/after"
if diff -u "$TMP/before" "$TMP/after"; then
	ok "no link, address, route or firewall rule left behind"
else
	fail "network-virtual stop left changes behind (diff above)"
fi
echo "(IP forwarding, once enabled, stays on: net.ipv4.ip_forward=$(in_dom0 sysctl -n net.ipv4.ip_forward)," \
	"net.ipv6.conf.all.forwarding=$(in_dom0 sysctl -n net.ipv6.conf.all.forwarding))"

# =======================================================================================
section "A second host: one network over two hosts (VXLAN overlay)"
# =======================================================================================
# dom0 and host2 are joined by an underlay link (198.51.100.0/24); each runs
# network-virtual with its own config, the same VNI and the other as its peer. A guest
# behind each host's bridge (attached by qemu-ifup) reaches the other across the tunnel.
HOST2=brdemo-h2-$$
GUEST3=brdemo-g3-$$
GUEST4=brdemo-g4-$$
mkns "$HOST2"; mkns "$GUEST3"; mkns "$GUEST4"
ip -n "$DOM0" link add ul0 type veth peer name eth0 netns "$HOST2"
ip -n "$DOM0" addr add 198.51.100.1/24 dev ul0
ip -n "$HOST2" addr add 198.51.100.2/24 dev eth0
ip -n "$DOM0" link set ul0 up
ip -n "$HOST2" link set eth0 up
n=2
for pair in "$DOM0:$GUEST3" "$HOST2:$GUEST4"; do
	n=$((n + 1))
	h=${pair%%:*} g=${pair##*:}
	ip -n "$g" link add eth0 type veth peer name "vq$n" netns "$h"
	ip -n "$g" addr add "10.77.0.1$n/24" dev eth0
	ip -n "$g" link set eth0 up mtu 1450
done
mkdir -p "$TMP/h2/run" "$TMP/h2/state"
span_config() { # FILE PEER
	cat >"$1" <<TOML
[network.span]
bridge = "brspan"
address = "10.77.0.1/24"

[network.span.overlay]
vni = 4242
peers = ["$2"]
TOML
}
span_config "$TMP/span1.toml" 198.51.100.2
span_config "$TMP/span2.toml" 198.51.100.1
echo "dom0's config ($TMP/span1.toml; host2's names 198.51.100.1 as its peer):"; sed 's/^/    /' "$TMP/span1.toml"
on_dom0()  { BROUTER_CONFIG=$TMP/span1.toml ip netns exec "$DOM0" "$@"; }
on_host2() { BROUTER_CONFIG=$TMP/span2.toml BROUTER_RUN_DIR=$TMP/h2/run BROUTER_STATE_DIR=$TMP/h2/state ip netns exec "$HOST2" "$@"; }
snapshot "$TMP/before-span"
step "start on both hosts, attach a guest on each (qemu-ifup)"
run on_dom0 "$NV" start net=span
run on_host2 "$NV" start net=span
on_dom0 "$BINDIR/qemu-ifup" vq3 brspan
on_host2 "$BINDIR/qemu-ifup" vq4 brspan
run ip -n "$DOM0" -d link show vx-span
run ip netns exec "$DOM0" bridge fdb show dev vx-span
step "guest3 (behind dom0) pings guest4 (behind host2) across the tunnel, 1400 bytes with DF"
run ip netns exec "$GUEST3" ping -c 2 -W 2 -M do -s 1372 10.77.0.14
ok "one L2 segment across two hosts (MTU $(ip netns exec "$DOM0" cat /sys/class/net/brspan/mtu): the underlay's 1500 minus VXLAN's 50)"
step "status on dom0"
run on_dom0 "$NV" status net=span
step "stop on both hosts"
on_dom0 "$BINDIR/qemu-ifup" --down vq3
on_host2 "$BINDIR/qemu-ifup" --down vq4
run on_dom0 "$NV" stop net=span
run on_host2 "$NV" stop net=span
snapshot "$TMP/after-span"
if diff -u "$TMP/before-span" "$TMP/after-span"; then
	ok "no link, address, route or firewall rule of the overlay left behind in dom0"
else
	fail "network-virtual stop left changes of the overlay behind (diff above)"
fi
