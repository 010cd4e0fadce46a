package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/brouter/brouter/shared/nstest"
)

// TestCNIBuiltinIPAM: a conflist that names a network and no IPAM plugin gets
// addresses from brouter's allocator: outside the network's DHCP range,
// never the gateway, the "ips" capability honoured, released by DEL and by
// GC, and the containers reach each other and the gateway.
func TestCNIBuiltinIPAM(t *testing.T) {
	t.Parallel()
	cw := newCNIWorld(t)
	cw.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
[network.lab.dhcp]
range_start = "10.98.98.100"
range_end = "10.98.98.200"
`)
	cw.openForDnsmasq()
	dump := func() string { return cniNeutral(cw.dom0.Dump(t), "brlab") }
	cw.mustRun(0, "start", "net=lab")
	before := dump()
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "lab",
  "plugins": [{"type": "brouter", "network": "lab", "capabilities": {"ips": true}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctrs := []*nstest.NS{nstest.New(t, "ctr"), nstest.New(t, "ctr"), nstest.New(t, "ctr")}
	rts := make([]*libcni.RuntimeConf, len(ctrs))
	addrs := make([]string, len(ctrs))
	for i, c := range ctrs {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ipam%d-%s", i, c.Name()), NetNS: c.Path(), IfName: "eth0"}
	}
	rts[2].CapabilityArgs = map[string]any{"ips": []string{"10.98.98.77/24"}}
	for i := range ctrs {
		res, err := cw.add(list, rts[i])
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if len(res.IPs) != 1 || res.IPs[0].Gateway.String() != gatewayIP {
			t.Fatalf("ADD %d: IPs %v", i, res.IPs)
		}
		addrs[i] = res.IPs[0].Address.IP.String()
		if got := ctrs[i].Exec(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(got, " "+addrs[i]+"/24 ") {
			t.Errorf("container %d has %q, want %s/24", i, got, addrs[i])
		}
	}
	if addrs[0] != "10.98.98.64" || addrs[1] != "10.98.98.65" || addrs[2] != "10.98.98.77" {
		t.Errorf("addresses %v, want 10.98.98.64, .65 (the first of the allocator's default pool, a /24's second quarter) and .77 (asked for)", addrs)
	}
	mustPing(t, ctrs[0], "ctr0", addrs[1])
	mustPing(t, ctrs[1], "ctr1", gatewayIP)
	if err := cw.check(list, rts[0]); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// An address someone has is refused (code 7), and nothing is left.
	ctr := nstest.New(t, "ctr")
	taken := &libcni.RuntimeConf{ContainerID: "ipam-taken", NetNS: ctr.Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"ips": []string{"10.98.98.77"}}}
	mid := dump()
	if _, err := cw.add(list, taken); err == nil {
		t.Errorf("ADD asking for a taken address succeeded")
	}
	if d := nstest.Diff(mid, dump()); d != "" {
		t.Errorf("the refused ADD changed dom0:\n%s", d)
	}
	// DEL releases; GC releases what no valid attachment holds.
	if err := cw.del(list, rts[0]); err != nil {
		t.Fatal(err)
	}
	if err := cw.in(func() error {
		return cw.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rts[1].ContainerID, IfName: "eth0"}}})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	owners, _ := filepath.Glob(filepath.Join(cw.stateDir, "lab", "addrs", "owner", "*"))
	if len(owners) != 1 {
		t.Errorf("after DEL of ctr0 and GC keeping ctr1: owners %v, want ctr1's only", owners)
	}
	if err := cw.del(list, rts[1]); err != nil {
		t.Fatal(err)
	}
	if ips, _ := os.ReadDir(filepath.Join(cw.stateDir, "lab", "addrs", "ip")); len(ips) != 0 {
		t.Errorf("addresses left after DEL and GC: %v", ips)
	}
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after DEL and GC differs:\n%s", d)
	}
}
