package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/brouter/brouter/shared/nstest"
)

// serveName runs a TCP server on :port inside ns that answers every
// connection with name and the peer address it saw, until the test ends.
func serveName(t *testing.T, ns *nstest.NS, port int, name string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name(), err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			c.Close()
		}
	}()
}

// ask connects from ns to addr and returns the first line the server sends.
func ask(ns *nstest.NS, addr string) (string, error) { return askWithin(ns, addr, 2*time.Second) }

// askWithin is ask giving up after d.
func askWithin(ns *nstest.NS, addr string, d time.Duration) (string, error) {
	var line string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, d)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// mustReach checks that a connection from ns to addr lands on the server name.
func mustReach(t *testing.T, from *nstest.NS, what, addr, name string) {
	t.Helper()
	var got string
	var err error
	for i := 0; i < 3; i++ { // the first SYN may wait for ARP/neighbour discovery
		if got, err = ask(from, addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("%s: connect to %s: %v", what, addr, err)
		return
	}
	if f := strings.Fields(got); len(f) == 0 || f[0] != name {
		t.Errorf("%s: %s answered %q, want the server %s", what, addr, got, name)
		return
	}
	t.Logf("%s: %s -> %s", what, addr, got)
}

func mustNotReach(t *testing.T, from *nstest.NS, what, addr string) {
	t.Helper()
	if got, err := ask(from, addr); err == nil {
		t.Errorf("%s: %s still answers (%q)", what, addr, got)
	}
}

// TestCNIPortMappings publishes a container port through the portMappings
// capability and reaches it from another host, from the host itself (its
// addresses and 127.0.0.1), and from containers on the same bridge (hairpin,
// the container itself included); a second container asking for the same
// host port is refused; DEL leaves dom0 as it was.
func TestCNIPortMappings(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testCNIPortMappings(t, backend)
		})
	}
}

func testCNIPortMappings(t *testing.T, backend string) {
	cw := newCNIWorldWith(t, worldOpts{outside: true})
	cw.writeConfig(fmt.Sprintf(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
firewall = %q
`, backend))
	dump := func() string {
		d := cniNeutral(cw.dom0.Dump(t), "brlab")
		if backend == "iptables" {
			// iptables-nft creates built-in chains (nat PREROUTING, OUTPUT) on
			// first use and never removes them; empty ones are not brouter's.
			d = nstest.WithoutEmptyBuiltins(d)
		}
		return d
	}
	cw.mustRun(0, "start", "net=lab")
	before := dump()

	list, _ := cniConflistWith(t, t.TempDir(), `
    "capabilities": {"portMappings": true, "bandwidth": true},`)
	ctrs := []*nstest.NS{nstest.New(t, "ctr"), nstest.New(t, "ctr")}
	rts := make([]*libcni.RuntimeConf, len(ctrs))
	for i, c := range ctrs {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("pm%d-%s", i, c.Name()), NetNS: c.Path(), IfName: "eth0"}
		c.Exec(t, "ip", "link", "set", "lo", "up")
	}
	rts[0].CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
		{"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": uplinkDom0},
	}}
	res, err := cw.add(list, rts[0])
	if err != nil {
		t.Fatalf("ADD ctr0: %v", err)
	}
	ctr0IP := res.IPs[0].Address.IP.String()
	// The second container asks for a host port the first one has.
	rts[1].CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
	}}
	mid := dump()
	if _, err := cw.add(list, rts[1]); err == nil || !strings.Contains(err.Error(), "already published") {
		t.Errorf("ADD ctr1 with ctr0's host port: %v, want an 'already published' error", err)
	}
	if d := nstest.Diff(mid, dump()); d != "" {
		t.Errorf("the refused ADD changed dom0 (- before, + after):\n%s", d)
	}
	rts[1].CapabilityArgs = nil
	if _, err := cw.add(list, rts[1]); err != nil {
		t.Fatalf("ADD ctr1: %v", err)
	}
	serveName(t, ctrs[0], 80, "ctr0")
	serveName(t, ctrs[0], 443, "ctr0-tls")

	mustReach(t, ctrs[0], "container itself", ctr0IP+":80", "ctr0")
	mustReach(t, cw.outside, "outside host", uplinkDom0+":8080", "ctr0")
	mustReach(t, cw.outside, "outside host, hostIP mapping", uplinkDom0+":8443", "ctr0-tls")
	mustReach(t, cw.dom0, "host, uplink address", uplinkDom0+":8080", "ctr0")
	mustReach(t, cw.dom0, "host, bridge address", gatewayIP+":8080", "ctr0")
	mustReach(t, cw.dom0, "host, localhost", "127.0.0.1:8080", "ctr0")
	mustReach(t, ctrs[1], "hairpin from ctr1, gateway", gatewayIP+":8080", "ctr0")
	mustReach(t, ctrs[1], "hairpin from ctr1, uplink address", uplinkDom0+":8080", "ctr0")
	mustReach(t, ctrs[0], "hairpin to itself", gatewayIP+":8080", "ctr0")
	// A hostIP mapping is only on that address.
	mustNotReach(t, cw.dom0, "hostIP mapping on another address", gatewayIP+":8443")

	// CHECK passes, and notices a published port gone from the firewall;
	// DEL still removes everything (the record's hint no longer matches).
	if err := cw.check(list, rts[0]); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if backend == "nftables" {
		cw.dom0.Exec(t, "nft", "flush", "map", "inet", "brouter-lab.fwd", "fwd4any")
	} else {
		cw.dom0.Exec(t, "iptables", "-t", "nat", "-F", "BRFW-"+cniHostVeth(rts[0].ContainerID, "eth0"))
	}
	if err := cw.check(list, rts[0]); err == nil || !strings.Contains(err.Error(), "missing from the firewall") {
		t.Errorf("CHECK after removing a published port: %v, want it missing from the firewall", err)
	}
	for i := range ctrs {
		if err := cw.del(list, rts[i]); err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	mustNotReach(t, cw.outside, "outside host after DEL", uplinkDom0+":8080")
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after DEL differs (- before, + after):\n%s", d)
	}
}
