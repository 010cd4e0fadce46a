package qemu

// initScript is the guest's /init (busybox sh). It reads its tasks from the
// kernel command line and reports on the serial console in lines that start
// with "BRTEST " (see Result):
//
//	brtest.ip=A/LEN,GW    configure eth0 statically instead of DHCP
//	brtest.ping=A,B,...   ping each address (3 tries of one echo request, 2 s each)
//	brtest.resolve=N,...  look each name up with the DNS server from the lease
//
// Reports, in this order:
//
//	BRTEST insmod NAME fail          a module did not load
//	BRTEST mac MAC                   eth0's MAC
//	BRTEST lease IP | fail           from udhcpc (or "static IP")
//	BRTEST mask LEN / router A / dns A B / domain D / leasetime S / server A
//	BRTEST ping ADDR ok|fail
//	BRTEST resolve NAME ADDR|fail
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
trap 'r done; poweroff -f' EXIT

for m in $(cat /modules/order); do
	insmod /modules/$m.ko || r "insmod $m fail"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
ip link set lo up
ip link set eth0 up || r "link eth0 fail"
r "mac $(cat /sys/class/net/eth0/address)"

static= pings= names=
for w in $(cat /proc/cmdline); do
	case "$w" in
	brtest.ip=*) static=${w#brtest.ip=} ;;
	brtest.ping=*) pings=${w#brtest.ping=} ;;
	brtest.resolve=*) names=${w#brtest.resolve=} ;;
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

for a in $(echo "$pings" | tr , ' '); do
	res=fail
	for try in 1 2 3; do
		if ping -c 1 -W 2 "$a" >/dev/null 2>&1; then res=ok; break; fi
	done
	r "ping $a $res"
done

for n in $(echo "$names" | tr , ' '); do
	got=$(nslookup -type=a "$n" 2>/dev/null | awk '/^Name:/ {f=1; next} f && /^Address/ {print $2; exit}')
	r "resolve $n ${got:-fail}"
done
`

// udhcpcScript is busybox udhcpc's hook (-s): it configures eth0, the default
// route and /etc/resolv.conf from the lease, and writes what it got to
// /tmp/lease for /init to report.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	len=${mask:-24}
	ip addr flush dev "$interface"
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
