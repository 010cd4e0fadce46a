package e2e

import (
	"strings"
	"testing"
)

// Every program prints its usage for -h and --help and exits 0, changing
// nothing; an interface name that starts with '-' is refused with one line
// and a non-zero exit, also changing nothing.
func TestHelpAndDashNames(t *testing.T) {
	t.Parallel()
	h := natVifHost(t, "nftables")
	v := newXvif(9, 0)
	h.vifGuest(t, "g9", v.name(), v.mac, "10.98.98.19/24")
	h.writeBackend(v, "xenbr0", nil)
	h.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", "tap-h0")
	h.settle(t)
	before := h.fullDump(t, v.name())

	for _, flag := range []string{"--help", "-h"} {
		if r := h.run(flag); r.code != 0 || !strings.HasPrefix(r.stdout, "usage: network-virtual") {
			t.Errorf("network-virtual %s:\n%s", flag, r)
		}
		for _, args := range [][]string{{flag}, {flag, "tap-h0"}} {
			if code, stderr := h.qemuScript("qemu-ifup", nil, args...); code != 0 || stderr != "" {
				t.Errorf("qemu-ifup %v: exit %d, stderr %q", args, code, stderr)
			}
		}
		// With libxl's environment, and without any.
		for _, env := range [][]string{h.libxlEnv(v, "vif"), nil} {
			r := h.vifRunT(t, 0, env, flag)
			if !strings.HasPrefix(r.stdout, "usage: vif-brouter") || r.stderr != "" {
				t.Errorf("vif-brouter %s:\n%s", flag, r)
			}
		}
	}
	if s, _ := h.key(v, "hotplug-status"); s != "" {
		t.Errorf("vif-brouter --help wrote hotplug-status %q", s)
	}
	h.sameAfterOffline(t, "after --help", before, v.name())

	for _, args := range [][]string{{"-tap"}, {"--down", "-tap"}, {"tap-h0", "-br"}} {
		code, stderr := h.qemuScript("qemu-ifup", nil, args...)
		if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "starts with '-'") {
			t.Errorf("qemu-ifup %v: exit %d, stderr %q", args, code, stderr)
		}
	}
	r := h.vifRunT(t, -1, h.libxlEnv(v, "vif", "vif=-vif9.0"), "online", "type_if=vif")
	if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "starts with '-'") {
		t.Errorf("vif-brouter with vif=-vif9.0:\n%s", r)
	}
	if r := h.run("start", "netdev=-eth0"); r.code == 0 || !strings.Contains(r.stderr, "starts with '-'") {
		t.Errorf("network-virtual netdev=-eth0:\n%s", r)
	}
	if s, _ := h.key(v, "hotplug-status"); s != "error" {
		t.Errorf("vif-brouter with vif=-vif9.0: hotplug-status %q, want error (so the guest fails at once)", s)
	}
	h.sameAfterOffline(t, "after names starting with '-'", before, v.name())
}
