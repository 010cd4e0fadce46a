package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/brouter/brouter/shared/nstest"
)

// TestCNIPublishedIPv6NAT6: a container on a nat6 network (addresses from
// brouter's allocator, IPv4 and IPv6) publishes a port without hostIP: the
// outside reaches it on dom0's IPv6 address; the container's own IPv6
// address takes no new connection from outside (nat6: replies and published
// ports only), and its connections out arrive from dom0's address. Both
// backends.
func TestCNIPublishedIPv6NAT6(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			cw := newCNIWorldWith(t, worldOpts{outside: true})
			cw.dom0.Exec(t, "ip", "-6", "addr", "add", uplink6+"/64", "dev", uplinkDev, "nodad")
			cw.outside.Exec(t, "ip", "-6", "addr", "add", outside6+"/64", "dev", "eth0", "nodad")
			cw.dom0.Exec(t, "ip", "-6", "route", "add", "default", "via", outside6)
			// The outside could route to the guests' prefix: only nat6's policy keeps it out.
			cw.outside.Exec(t, "ip", "-6", "route", "add", "fd00:98::/64", "via", uplink6)
			cw.writeConfig(fmt.Sprintf("[network.lab]\nbridge = \"brlab\"\naddress = %q\naddress6 = \"fd00:98::1/64\"\nnat6 = true\nuplink = %q\nfirewall = %q\n[network.lab.dhcp6]\nipv6_mode = \"none\"\n",
				gatewayCIDR, uplinkDev, backend))
			cw.mustRun(0, "start", "net=lab")
			list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "lab", "plugins": [
  {"type": "brouter", "network": "lab", "capabilities": {"portMappings": true}}]}`))
			if err != nil {
				t.Fatal(err)
			}
			ctr := nstest.New(t, "ctr")
			rt := &libcni.RuntimeConf{ContainerID: "v6-" + ctr.Name(), NetNS: ctr.Path(), IfName: "eth0",
				CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}}
			res, err := cw.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Cleanup(func() { _ = cw.del(list, rt) })
			ctr6 := ""
			for _, ip := range res.IPs {
				if ip.Address.IP.To4() == nil {
					ctr6 = ip.Address.IP.String()
				}
			}
			if ctr6 == "" {
				t.Fatalf("the container got no IPv6 address: %+v", res.IPs)
			}
			serveName(t, ctr, 80, "ctr")
			serveName(t, cw.outside, 7777, "outside")
			mustReach(t, cw.outside, "published port over IPv6", "["+uplink6+"]:8080", "ctr")
			mustNotReach(t, cw.outside, "nat6: a new connection to the container's own address", "["+ctr6+"]:80")
			got, err := ask(ctr, "["+outside6+"]:7777")
			if err != nil {
				t.Fatalf("container -> outside over IPv6: %v", err)
			}
			if !strings.Contains(got, "["+uplink6+"]") {
				t.Errorf("nat6: the outside saw the container's connection from %q, want dom0's %s", got, uplink6)
			}
		})
	}
}
