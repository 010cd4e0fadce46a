package link

import (
	"os"
	"strings"
)

// Sysctl reads a sysctl of the current network namespace by its dotted name
// ("net.ipv4.ip_forward"): its value, and false when it does not exist (a
// module not loaded, such as br_netfilter's net.bridge.*).
func Sysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// Forwarding reports whether IPv4 and IPv6 forwarding are on.
func Forwarding() (v4, v6 bool) {
	a, _ := Sysctl("net.ipv4.ip_forward")
	b, _ := Sysctl("net.ipv6.conf.all.forwarding")
	return a == "1", b == "1"
}

// BridgeNetfilter reports whether br_netfilter hands bridged IPv4 frames to
// iptables/nftables' ip hooks (net.bridge.bridge-nf-call-iptables = 1): then
// frames between guests on one bridge also pass the forward hook.
func BridgeNetfilter() bool {
	v, ok := Sysctl("net.bridge.bridge-nf-call-iptables")
	return ok && v == "1"
}
