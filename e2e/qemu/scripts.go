package qemu

// initScript is the guest's /init (busybox sh). It reads its tasks from the
// kernel command line and reports on the serial console in lines that start
// with "BRTEST " (see Result):
//
//	brtest.ip=A/LEN,GW    configure eth0 statically instead of DHCP
//	brtest.ping=A,B,...   ping each address (3 tries of one echo request, 2 s each)
//	brtest.resolve=N,...  look each name up with the DNS server from the lease
//	brtest.ipv6=MODE      IPv6 from the network's router advertisements: "slaac"
//	                      (wait for the autoconfigured address), "dhcpv6" (no SLAAC
//	                      address: ask DHCPv6 with /bin/dhcp6c), "slaac+dhcpv6" (both)
//	brtest.ping6=A,...    ping each IPv6 address (as brtest.ping)
//	brtest.resolve6=S,N,... look each name N up (AAAA) with the DNS server S
//
// Reports, in this order:
//
//	BRTEST insmod NAME fail          a module did not load
//	BRTEST mac MAC                   eth0's MAC
//	BRTEST lease IP | fail           from udhcpc (or "static IP")
//	BRTEST mask LEN / router A / dns A B / domain D / leasetime S / server A
//	BRTEST ping ADDR ok|fail
//	BRTEST resolve NAME ADDR|fail
//	BRTEST addr6 ADDR/LEN | fail     the SLAAC address (global, from the RA's prefix)
//	BRTEST route6 ADDR | fail        the default route's gateway (from the RA)
//	BRTEST mtu6 N                    eth0's IPv6 MTU (the RA's MTU option)
//	BRTEST lease6 ADDR | fail        from dhcp6c; then BRTEST dns6 ADDR ...
//	BRTEST ping6 ADDR ok|fail
//	BRTEST resolve6 NAME ADDR|fail
//	BRTEST ipv6took SECONDS          guest time the IPv6 tasks took
//	BRTEST done
//
// then it powers the machine off, which makes QEMU exit (and run its
// downscript).
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /etc /run
r() { echo "BRTEST $*"; }
# pingall CMD LABEL A,B,...: reports "LABEL A ok|fail" for each address, three tries each.
pingall() {
	for a in $(echo "$3" | tr , ' '); do
		res=fail
		for try in 1 2 3; do
			if $1 -c 1 -W 2 "$a" >/dev/null 2>&1; then res=ok; break; fi
		done
		r "$2 $a $res"
	done
}

# IPv6: SLAAC and the default route from the router advertisements (up to
# 15 s), DHCPv6, then pings and AAAA lookups.
ipv6_tasks() {
	t0=$(cut -d' ' -f1 /proc/uptime)
	a= gw=
	for i in $(seq 150); do
		[ -z "$a" ] && a=$(ip -6 -o addr show dev eth0 scope global | awk '!/tentative/ {print $4; exit}')
		gw=$(ip -6 route show default | awk '{print $3; exit}')
		case "$ipv6" in slaac*) [ -n "$a" ] && [ -n "$gw" ] && break ;; *) [ -n "$gw" ] && break ;; esac
		usleep 100000
	done
	case "$ipv6" in slaac*) r "addr6 ${a:-fail}" ;; esac
	r "route6 ${gw:-fail}"
	r "mtu6 $(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
	case "$ipv6" in
	*dhcpv6)
		/bin/dhcp6c eth0 >/tmp/lease6 2>/tmp/dhcp6c.log
		while read -r l; do r "$l"; done </tmp/lease6
		l6=$(awk '$1 == "lease6" && $2 != "fail" {print $2}' /tmp/lease6)
		if [ -n "$l6" ]; then
			ip -6 addr add "$l6/128" dev eth0
			for i in $(seq 30); do ip -6 -o addr show dev eth0 | grep -q "$l6/128.*tentative" || break; usleep 100000; done
		else
			{ cat /tmp/dhcp6c.log; ip -6 addr show dev eth0; } | sed 's/^/dhcp6c: /'
		fi
		;;
	esac
	pingall ping6 ping6 "$pings6"
	srv=${names6%%,*}
	for n in $(echo "${names6#*,}" | tr , ' '); do
		[ "$names6" = "$srv" ] && break
		got=$(nslookup -type=aaaa "$n" "$srv" 2>/dev/null | awk '/^Name:/ {f=1; next} f && /^Address/ {print $2; exit}')
		r "resolve6 $n ${got:-fail}"
	done
	r "ipv6took $(awk -v t0="$t0" '{printf "%.1fs", $1 - t0}' /proc/uptime)"
}
trap 'r done; poweroff -f' EXIT

for m in $(cat /modules/order); do
	insmod /modules/$m.ko || r "insmod $m fail"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
ip link set lo up
case " $(cat /proc/cmdline) " in
*" brtest.ipv6=dhcpv6 "*) echo 0 >/proc/sys/net/ipv6/conf/eth0/autoconf ;; # addresses by DHCPv6 only
esac
ip link set eth0 up || r "link eth0 fail"
r "mac $(cat /sys/class/net/eth0/address)"

static= pings= names= ipv6= pings6= names6=
for w in $(cat /proc/cmdline); do
	case "$w" in
	brtest.ip=*) static=${w#brtest.ip=} ;;
	brtest.ping=*) pings=${w#brtest.ping=} ;;
	brtest.resolve=*) names=${w#brtest.resolve=} ;;
	brtest.ipv6=*) ipv6=${w#brtest.ipv6=} ;;
	brtest.ping6=*) pings6=${w#brtest.ping6=} ;;
	brtest.resolve6=*) names6=${w#brtest.resolve6=} ;;
	esac
done

if [ -n "$static" ]; then
	addr=${static%%,*} gw=${static#*,}
	ip addr add "$addr" dev eth0
	[ "$gw" != "$static" ] && ip route add default via "$gw"
	r "static ${addr%/*}"
elif udhcpc -i eth0 -f -n -q -t 10 -T 2 -s /udhcpc.script >/tmp/udhcpc.log 2>&1 && [ -s /tmp/lease ]; then
	while read -r l; do r "$l"; done </tmp/lease
else
	r "lease fail"
	sed 's/^/udhcpc: /' /tmp/udhcpc.log
fi

pingall ping ping "$pings"

for n in $(echo "$names" | tr , ' '); do
	got=$(nslookup -type=a "$n" 2>/dev/null | awk '/^Name:/ {f=1; next} f && /^Address/ {print $2; exit}')
	r "resolve $n ${got:-fail}"
done

[ -n "$ipv6" ] && ipv6_tasks
`

// udhcpcScript is busybox udhcpc's hook (-s): it configures eth0, the default
// route and /etc/resolv.conf from the lease, and writes what it got to
// /tmp/lease for /init to report.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface" # IPv4 only: the link-local IPv6 address stays
	ip link set "$interface" up
	;;
bound|renew)
	len=${mask:-24}
	ip -4 addr flush dev "$interface" # IPv4 only: the link-local IPv6 address stays
	ip addr add "$ip/$len" dev "$interface"
	ip route del default 2>/dev/null
	for gw in $router; do ip route add default via "$gw" dev "$interface"; break; done
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	{
		echo "lease $ip"
		echo "mask $len"
		echo "router $router"
		echo "dns $dns"
		echo "domain $domain"
		echo "leasetime $lease"
		echo "server $serverid"
	} >/tmp/lease
	;;
esac
exit 0
`
