package vnet

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/dhcp"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/shape"
)

// Fakes of the mechanisms (mechanisms.go), for unit tests of vnet's port
// policy without root: in-memory devices, shaping and static leases, the
// firewall package's Fake, and one fault injector shared by all of them
// that fails the first changing call of a given name.

// faults records the changing calls of the fakes, and fails the first call
// named failOn.
type faults struct {
	mu     sync.Mutex
	failOn string
	failed bool
	calls  []string
}

var errInjected = errors.New("injected failure")

func (f *faults) hit(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	if name == f.failOn && !f.failed {
		f.failed = true
		return fmt.Errorf("%s: %w", name, errInjected)
	}
	return nil
}

// names are the distinct calls seen, in the order first seen.
func (f *faults) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

type fakeDev struct {
	kind          string
	index         int
	master        string
	up            bool
	mac           string
	mtu           int
	ipv6          bool
	hairpin       bool
	proxyARP      bool
	routeLocalnet bool
	addrs         []netip.Prefix
	routes        map[netip.Addr]netip.Addr // guest address → source
}

// fakeLinks is Links in memory.
type fakeLinks struct {
	mu   sync.Mutex
	devs map[string]*fakeDev
	next int
	f    *faults
}

func newFakeLinks(f *faults) *fakeLinks {
	return &fakeLinks{devs: map[string]*fakeDev{}, next: 1, f: f}
}

// add makes a device: kind "veth", "tap", "bridge", "device", ...
func (l *fakeLinks) add(name, kind string, mtu int) *fakeDev {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := &fakeDev{kind: kind, index: l.next, mtu: mtu, ipv6: true, routes: map[netip.Addr]netip.Addr{},
		mac: fmt.Sprintf("02:00:00:00:00:%02x", l.next)}
	l.next++
	l.devs[name] = d
	return d
}

func (l *fakeLinks) get(name string) (*fakeDev, error) {
	d, ok := l.devs[name]
	if !ok {
		return nil, fmt.Errorf("fake link: %s: %w", name, link.ErrNotFound)
	}
	return d, nil
}

// change runs fn on an existing device, after the fault injector; a
// missing device is an error unless missingOK.
func (l *fakeLinks) change(call, name string, missingOK bool, fn func(d *fakeDev) error) error {
	if err := l.f.hit("links." + call); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d, err := l.get(name)
	if err != nil {
		if missingOK {
			return nil
		}
		return err
	}
	return fn(d)
}

func (l *fakeLinks) Device(name string) (Device, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, err := l.get(name)
	if err != nil {
		return Device{}, err
	}
	out := Device{Name: name, Kind: d.kind, Index: d.index, Master: d.master, Up: d.up, MTU: d.mtu}
	out.MAC, _ = net.ParseMAC(d.mac)
	if m, ok := l.devs[d.master]; ok {
		out.MasterIndex = m.index
	}
	return out, nil
}

func (l *fakeLinks) Addrs(name string) ([]netip.Prefix, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, err := l.get(name)
	if err != nil {
		return nil, err
	}
	return slices.Clone(d.addrs), nil
}

func (l *fakeLinks) Attach(s link.AttachSpec) error {
	return l.change("Attach", s.Name, false, func(d *fakeDev) error {
		br, err := l.get(s.Bridge)
		if err != nil || br.kind != "bridge" {
			return fmt.Errorf("fake link: no bridge %s", s.Bridge)
		}
		d.mtu = br.mtu
		if s.MTU != 0 {
			d.mtu = s.MTU
		}
		if s.MAC != nil {
			d.mac = s.MAC.String()
		}
		d.master, d.up = s.Bridge, true
		d.hairpin = d.hairpin || s.Hairpin
		return nil
	})
}

func (l *fakeLinks) Detach(name string) error {
	return l.change("Detach", name, true, func(d *fakeDev) error {
		d.master, d.hairpin = "", false // the bridge port and its flags go
		return nil
	})
}

func (l *fakeLinks) Configure(name string, mtu int, mac net.HardwareAddr) error {
	return l.change("Configure", name, false, func(d *fakeDev) error {
		d.configure(mtu, mac)
		d.up = true
		return nil
	})
}

func (d *fakeDev) configure(mtu int, mac net.HardwareAddr) {
	if mtu > 0 {
		d.mtu = mtu
	}
	if mac != nil {
		d.mac = mac.String()
	}
}

func (l *fakeLinks) Restore(name string, mtu int, mac net.HardwareAddr) error {
	return l.change("Restore", name, true, func(d *fakeDev) error { d.configure(mtu, mac); return nil })
}

func (l *fakeLinks) SetDown(name string) error {
	return l.change("SetDown", name, true, func(d *fakeDev) error { d.up = false; return nil })
}

func (l *fakeLinks) SetIPv6(name string, on bool) (was bool, err error) {
	err = l.change("SetIPv6", name, false, func(d *fakeDev) error { was, d.ipv6 = d.ipv6, on; return nil })
	return was, err
}

func (l *fakeLinks) SetProxyARP(name string) error {
	return l.change("SetProxyARP", name, false, func(d *fakeDev) error { d.proxyARP = true; return nil })
}

func (l *fakeLinks) SetRouteLocalnet(name string, on bool) error {
	return l.change("SetRouteLocalnet", name, false, func(d *fakeDev) error { d.routeLocalnet = on; return nil })
}

func (l *fakeLinks) EnsureAddr(name string, p netip.Prefix) (added bool, err error) {
	err = l.change("EnsureAddr", name, false, func(d *fakeDev) error {
		if !slices.Contains(d.addrs, p) {
			d.addrs, added = append(d.addrs, p), true
		}
		return nil
	})
	return added, err
}

func (l *fakeLinks) DelAddr(name string, p netip.Prefix) error {
	return l.change("DelAddr", name, true, func(d *fakeDev) error {
		d.addrs = slices.DeleteFunc(d.addrs, func(a netip.Prefix) bool { return a == p })
		return nil
	})
}

func (l *fakeLinks) EnsureHostRoute(name string, addr, src netip.Addr) error {
	return l.change("EnsureHostRoute", name, false, func(d *fakeDev) error { d.routes[addr] = src; return nil })
}

func (l *fakeLinks) DelHostRoute(name string, addr netip.Addr) error {
	return l.change("DelHostRoute", name, true, func(d *fakeDev) error { delete(d.routes, addr); return nil })
}

func (l *fakeLinks) DeleteAll(names ...string) error {
	if err := l.f.hit("links.DeleteAll"); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		delete(l.devs, n)
	}
	return nil
}

// dump describes every device, one line each (proxy ARP aside: like the
// kernel's, it lives and dies with the device, and Detach leaves it).
func (l *fakeLinks) dump() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for name, d := range l.devs {
		var routes []string
		for a, s := range d.routes {
			routes = append(routes, a.String()+" src "+s.String())
		}
		sort.Strings(routes)
		out = append(out, fmt.Sprintf("link %s %s master=%q up=%v mac=%s mtu=%d ipv6=%v hairpin=%v localnet=%v addrs=%v routes=%v",
			name, d.kind, d.master, d.up, d.mac, d.mtu, d.ipv6, d.hairpin, d.routeLocalnet, d.addrs, routes))
	}
	sort.Strings(out)
	return out
}

// fakeShaper is Shaper in memory.
type fakeShaper struct {
	mu    sync.Mutex
	ports map[string]shape.PortLimits
	f     *faults
}

func (s *fakeShaper) ApplyPort(p shape.PortLimits) error {
	if err := s.f.hit("shaper.ApplyPort"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ports[p.Port] = p
	return nil
}

func (s *fakeShaper) RemovePort(port, network string) error {
	if err := s.f.hit("shaper.RemovePort"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ports, port)
	return nil
}

func (s *fakeShaper) ForgetPort(port, network string) error {
	if err := s.f.hit("shaper.ForgetPort"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ports, port)
	return nil
}

func (s *fakeShaper) dump() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for port, p := range s.ports {
		out = append(out, fmt.Sprintf("shaped %s %+v", port, p))
	}
	sort.Strings(out)
	return out
}

// fakeLeases is Leases in memory.
type fakeLeases struct {
	mu     sync.Mutex
	leases map[string]string // runDir|MAC → IP
	f      *faults
}

func (l *fakeLeases) AddStaticLease(runDir string, h dhcp.Host) error {
	if err := l.f.hit("leases.Add"); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leases[runDir+"|"+h.MAC.String()] = h.IP.String()
	return nil
}

func (l *fakeLeases) RemoveStaticLease(runDir string, mac net.HardwareAddr) error {
	if err := l.f.hit("leases.Remove"); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.leases, runDir+"|"+mac.String())
	return nil
}

func (l *fakeLeases) dump() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, ip := range l.leases {
		out = append(out, "lease "+filepath.Base(k)+" "+ip)
	}
	sort.Strings(out)
	return out
}

// faultyFirewall is a firewall backend whose changing calls go through the
// fault injector first.
type faultyFirewall struct {
	firewall.Backend
	f *faults
}

func (w faultyFirewall) EnsurePort(p firewall.PortRules) error {
	if err := w.f.hit("firewall.EnsurePort"); err != nil {
		return err
	}
	return w.Backend.EnsurePort(p)
}

func (w faultyFirewall) RemovePort(network, port string) error {
	if err := w.f.hit("firewall.RemovePort"); err != nil {
		return err
	}
	return w.Backend.RemovePort(network, port)
}

func (w faultyFirewall) EnsureForwards(fw firewall.Forwards) error {
	if err := w.f.hit("firewall.EnsureForwards"); err != nil {
		return err
	}
	return w.Backend.EnsureForwards(fw)
}

func (w faultyFirewall) RemoveForwards(network, port string) error {
	if err := w.f.hit("firewall.RemoveForwards"); err != nil {
		return err
	}
	return w.Backend.RemoveForwards(network, port)
}

// host is a Manager on the fakes, with a network NAME running on them (its
// record written as Start writes it, its bridge a fake device).
type host struct {
	t      *testing.T
	m      *Manager
	cfg    *config.Config
	faults *faults
	links  *fakeLinks
	shaper *fakeShaper
	leases *fakeLeases
	fw     *firewall.Fake
}

// testConfig is doc with run and state directories of the test's own.
func testConfig(t *testing.T, doc string) *config.Config {
	t.Helper()
	t.Setenv(config.EnvRunDir, "")
	t.Setenv(config.EnvStateDir, "")
	dir := t.TempDir()
	doc = fmt.Sprintf("run_dir = %q\nstate_dir = %q\n", filepath.Join(dir, "run"), filepath.Join(dir, "lib")) + doc
	cfg, err := config.Parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newHost(t *testing.T, doc string) *host {
	t.Helper()
	cfg := testConfig(t, doc)
	f := &faults{}
	h := &host{t: t, cfg: cfg, faults: f, links: newFakeLinks(f), fw: firewall.NewFake(),
		shaper: &fakeShaper{ports: map[string]shape.PortLimits{}, f: f}, leases: &fakeLeases{leases: map[string]string{}, f: f}}
	h.m = New(cfg)
	h.m.Links, h.m.Shaper, h.m.Leases = h.links, h.shaper, h.leases
	h.m.NewFirewall = func(string) (firewall.Backend, error) { return faultyFirewall{h.fw, f}, nil }
	h.links.add("up0", "device", 1500).addrs = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}
	for _, n := range cfg.Networks {
		rec := record{Network: n.Name, Bridge: n.Bridge, Mode: string(n.Mode), Backend: "fake", Started: time.Now().UTC()}
		if n.Mode != config.ModeRoute {
			br := h.links.add(n.Bridge, "bridge", n.MTU)
			br.up = true
		}
		if err := h.m.Records.Write(recordName(n.Name), &rec); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *host) net(name string) *config.Network {
	h.t.Helper()
	n, err := h.cfg.Select(name, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// dump is everything the fakes hold and every file under the run and state
// directories but locks: what Attach may change.
func (h *host) dump() string {
	h.t.Helper()
	lines := append(h.links.dump(), h.shaper.dump()...)
	lines = append(lines, h.leases.dump()...)
	for network := range h.cfg.Networks {
		fw, err := h.fw.List(network)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, l := range fw {
			lines = append(lines, "firewall "+l)
		}
	}
	for _, root := range []string{h.cfg.RunDir, h.cfg.StateDir} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			if strings.HasPrefix(rel, "locks/") || strings.HasPrefix(rel, "networks/") {
				return nil
			}
			b, _ := os.ReadFile(p)
			if strings.HasPrefix(rel, "ports/") {
				b = nil // its content (times) is checked elsewhere
			}
			lines = append(lines, "file "+rel+" "+strings.TrimSpace(string(b)))
			return nil
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (h *host) port(network, port string) portRecord {
	h.t.Helper()
	pr, ok, err := h.m.readPort(network, port)
	if err != nil || !ok {
		h.t.Fatalf("record of %s: %v (found %v)", port, err, ok)
	}
	return pr
}

// diff is a line diff of two dumps ("- a", "+ b"), empty when equal.
func diff(a, b string) string {
	if a == b {
		return ""
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
