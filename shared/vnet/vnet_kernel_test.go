package vnet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/nstest"
)

// fixture is one namespace with a Manager whose firewall is a fake, so these
// tests check vnet's policy against the kernel's real link state.
type fixture struct {
	ns  *nstest.NS
	m   *Manager
	fw  *firewall.Fake
	cfg *config.Config
}

func newFixture(t *testing.T, doc string) *fixture {
	t.Helper()
	nstest.RequireRoot(t)
	cfg := testConfig(t, doc)
	fw := firewall.NewFake()
	m := New(cfg)
	m.NewFirewall = func(string) (firewall.Backend, error) { return fw, nil }
	return &fixture{ns: nstest.New(t, "vnet"), m: m, fw: fw, cfg: cfg}
}

func (f *fixture) net(t *testing.T, name string) *config.Network {
	t.Helper()
	n, err := f.cfg.Select(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) do(t *testing.T, fn func() error) error {
	t.Helper()
	return f.ns.Do(fn)
}

const natDoc = `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
mtu = 1400
[network.lab.dhcp6]
ipv6_mode = "none" # no dnsmasq: these tests are about the bridge and the firewall
`

func TestStartStop(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	before := f.ns.Dump(t)
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	link := f.ns.Exec(t, "ip", "-d", "link", "show", "brlab")
	for _, want := range []string{"mtu 1400", "UP", "bridge forward_delay 0", "stp_state 0"} {
		if !strings.Contains(link, want) {
			t.Errorf("bridge lacks %q:\n%s", want, link)
		}
	}
	addrs := f.ns.Exec(t, "ip", "addr", "show", "brlab")
	for _, want := range []string{"10.98.98.1/24", "fd00:98::1/64"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("bridge lacks address %s:\n%s", want, addrs)
		}
	}
	if v := f.ns.Sysctl(t, "net.ipv4.ip_forward"); v != "1" {
		t.Errorf("ip_forward = %s", v)
	}
	r, ok := f.fw.Rules("lab")
	if !ok || !r.Masquerade || !r.Forward || r.Bridge != "brlab" || len(r.Subnets) != 2 {
		t.Errorf("firewall got %+v (present %v), want nat rules for both subnets", r, ok)
	}

	// Starting a running network changes nothing.
	running := f.ns.Dump(t)
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	if d := nstest.Diff(running, f.ns.Dump(t)); d != "" {
		t.Errorf("second start changed the host:\n%s", d)
	}
	var st *Status
	if err := f.do(t, func() (err error) { st, err = f.m.Status(n); return }); err != nil {
		t.Fatal(err)
	}
	if !st.Running || !st.CreatedBridge || st.Backend != "fake" || len(st.Problems) != 0 {
		t.Errorf("status %+v", st)
	}

	for i := 0; i < 2; i++ { // stop twice
		if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
			t.Fatalf("stop #%d: %v", i+1, err)
		}
	}
	if d := nstest.Diff(before, f.ns.Dump(t)); d != "" {
		t.Errorf("stop left something behind:\n%s", d)
	}
	if len(f.fw.Networks()) != 0 {
		t.Errorf("firewall still has %v", f.fw.Networks())
	}
	if err := f.do(t, func() (err error) { st, err = f.m.Status(n); return }); err != nil || st.Running {
		t.Errorf("status after stop: %+v %v", st, err)
	}
}

func TestFailedStartUndoes(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	before := f.ns.Dump(t)
	f.fw.FailWith(errors.New("boom"))
	err := f.do(t, func() error { return f.m.Start(n) })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("start with a failing firewall: %v", err)
	}
	if d := nstest.Diff(before, f.ns.Dump(t)); d != "" {
		t.Errorf("failed start left changes:\n%s", d)
	}
	if _, err := os.Stat(filepath.Join(f.cfg.RunDir, recordName("lab"))); !os.IsNotExist(err) {
		t.Errorf("failed start left its record: %v", err)
	}
}

func TestRefusesOverlapAndNonBridge(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	// No dummy driver on every kernel; a veth is as good a "other interface".
	f.ns.Exec(t, "ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum0p")
	f.ns.Exec(t, "ip", "link", "set", "dum0", "up")
	f.ns.Exec(t, "ip", "route", "add", "10.98.0.0/16", "dev", "dum0")
	before := f.ns.Dump(t)
	err := f.do(t, func() error { return f.m.Start(n) })
	if err == nil || !strings.Contains(err.Error(), "10.98.0.0/16") || !strings.Contains(err.Error(), "dum0") {
		t.Fatalf("overlap: %v, want an error naming dum0 and 10.98.0.0/16", err)
	}
	if d := nstest.Diff(before, f.ns.Dump(t)); d != "" {
		t.Errorf("refused start changed the host:\n%s", d)
	}
	f.ns.Exec(t, "ip", "route", "del", "10.98.0.0/16", "dev", "dum0")
	f.ns.Exec(t, "ip", "link", "add", "brlab", "type", "veth", "peer", "name", "brlabp")
	before = f.ns.Dump(t)
	if err := f.do(t, func() error { return f.m.Start(n) }); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("non-bridge link: %v", err)
	}
	if d := nstest.Diff(before, f.ns.Dump(t)); d != "" {
		t.Errorf("refused start changed the host:\n%s", d)
	}
}

func TestForeignBridgesAreKept(t *testing.T) {
	f := newFixture(t, natDoc+`
[network.lan]
bridge = "brlan"
mode = "bridge"
`)
	// A bridge someone else made: nat mode configures it but never deletes it;
	// bridge mode never touches it at all.
	for _, br := range []string{"brlab", "brlan"} {
		f.ns.Exec(t, "ip", "link", "add", br, "type", "bridge")
	}
	before := f.ns.Dump(t)
	for _, name := range []string{"lab", "lan"} {
		n := f.net(t, name)
		if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
			t.Fatal(err)
		}
		if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
			t.Fatal(err)
		}
	}
	after := f.ns.Dump(t)
	for _, br := range []string{"brlab", "brlan"} {
		if !strings.Contains(after, br) {
			t.Errorf("stop deleted %s, which it did not create", br)
		}
	}
	// brlab was set up (and MTU 1400) by start; stop removes addresses and rules only.
	if strings.Contains(after, "10.98.98.1") {
		t.Errorf("stop left the address:\n%s", nstest.Diff(before, after))
	}
	lan := f.net(t, "lan")
	f.ns.Exec(t, "ip", "link", "del", "brlan")
	if err := f.do(t, func() error { return f.m.Start(lan) }); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("bridge mode without the bridge: %v", err)
	}
}

func TestAttachDetachAndStopDetaches(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	f.ns.Exec(t, "ip", "link", "add", "p1", "type", "veth", "peer", "name", "p1g")
	f.ns.Exec(t, "ip", "link", "add", "p2", "type", "veth", "peer", "name", "p2g")
	if err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: "p1"}) }); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("attach to a stopped network: %v", err)
	}
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"p1", "p2"} {
		for i := 0; i < 2; i++ {
			if err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: p}) }); err != nil {
				t.Fatal(err)
			}
		}
		out := f.ns.Exec(t, "ip", "link", "show", p)
		if !strings.Contains(out, "master brlab") || !strings.Contains(out, "mtu 1400") {
			t.Errorf("%s after attach: %s", p, out)
		}
	}
	if err := f.do(t, func() error { return f.m.Detach(n, "p1") }); err != nil {
		t.Fatal(err)
	}
	if err := f.do(t, func() error { return f.m.Detach(n, "p1") }); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if err := f.do(t, func() error { return f.m.Detach(n, "gone0") }); err != nil {
		t.Fatalf("detach of a missing port: %v", err)
	}
	if out := f.ns.Exec(t, "ip", "link", "show", "p1"); strings.Contains(out, "master") {
		t.Errorf("p1 still enslaved: %s", out)
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
	if out := f.ns.Exec(t, "ip", "link", "show", "p2"); strings.Contains(out, "master") {
		t.Errorf("stop left p2 enslaved: %s", out)
	}
	if left, _ := f.m.Records.List(portDir("lab")); len(left) != 0 {
		t.Errorf("port records left: %v", left)
	}
}

func TestConcurrentStarts(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f.do(t, func() error { return f.m.Start(n) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if out := f.ns.Exec(t, "ip", "-br", "addr", "show", "brlab"); strings.Count(out, "10.98.98.1/24") != 1 {
		t.Errorf("addresses after parallel starts: %s", out)
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
}
