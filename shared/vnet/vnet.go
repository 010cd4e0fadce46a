// Package vnet is brouter's policy: what starting, stopping and inspecting a
// virtual network means, and how a port (a Xen vif, a QEMU tap, a CNI veth)
// joins one. Hooks translate their caller's convention into a call here; the
// mechanism packages (link, firewall, state) do what vnet tells them.
//
// Every operation is idempotent. Start and Stop are serialised per network by
// a lock with a deadline, and wait for the ports in flight; ports attach and
// detach at once, each under a lock of its own (locks.go). A failed Start or
// Attach undoes what it did, so bad input or a broken host leaves the host as
// it was.
package vnet

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/shape"
	"github.com/brouter/brouter/shared/state"
)

// Manager carries out operations on the networks of one host config.
type Manager struct {
	Config *config.Config
	// Records holds volatile records and locks (config.RunDir).
	Records *state.Store
	// NewFirewall returns the backend for a config value ("auto", "nftables",
	// "iptables"); tests replace it with a fake.
	NewFirewall func(kind string) (firewall.Backend, error)
	// The mechanisms ports are attached with (mechanisms.go); unit tests
	// replace them with fakes.
	Links  Links
	Shaper Shaper
	Leases Leases

	fwMu sync.Mutex
	fws  map[string]firewall.Backend // NewFirewall's, by kind (firewall)
	// Accounts resolves the user and group names of allow lists
	// (Authorize); nil: SystemAccounts.
	Accounts *Accounts
	// Note, when set, receives notes: one line each about something the
	// operation did not change but the caller should know (ipv6.go).
	Note func(line string)
}

// New returns a Manager for the config, with the real mechanisms.
func New(c *config.Config) *Manager {
	ensurePath()
	run := state.NewVolatile(c.RunDir)
	// The firewall's own records of what it installed ("." cannot occur in a
	// network name, so run_dir/firewall.d never collides with a network's directory).
	fwRecords := state.NewVolatile(filepath.Join(c.RunDir, "firewall.d"))
	return &Manager{Config: c, Records: run, NewFirewall: func(kind string) (firewall.Backend, error) {
		return firewall.New(kind, fwRecords)
	}, Links: kernelLinks{}, Shaper: kernelShaper{}, Leases: dnsmasqLeases{}}
}

// ensurePath gives the process a PATH when its caller gave none: libxl and
// udev may run hotplug scripts with a bare environment, and the firewall
// backends run nft and iptables by name. Xen's own scripts do the same.
func ensurePath() {
	const std = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if p := os.Getenv("PATH"); p == "" {
		os.Setenv("PATH", std)
	}
}

// record is what Start remembers about a network for Stop and Status.
type record struct {
	Network       string    `json:"network"`
	Bridge        string    `json:"bridge"`
	Mode          string    `json:"mode"`
	Backend       string    `json:"backend,omitempty"`
	CreatedBridge bool      `json:"created_bridge"`
	Addresses     []string  `json:"addresses,omitempty"` // the ones we put on the bridge
	Started       time.Time `json:"started"`
	// IsolateGuests: the network's ports were isolated (policy.go).
	IsolateGuests bool `json:"isolate_guests,omitempty"`

	Overlay *overlayRecord `json:"overlay,omitempty"` // the tunnel to other hosts (overlay.go)
}

func recordName(network string) string { return "networks/" + network + ".json" }

// Start brings the network up: the bridge (created if absent), its addresses,
// forwarding and the firewall rules its mode needs. Starting a running network
// changes nothing; a failed Start undoes its own changes.
func (m *Manager) Start(n *config.Network) (err error) {
	_, err = m.start(n, false)
	return err
}

// start is Start; with onlyRunning (a reconcile) a network that is not
// running (stopped meanwhile) is left alone, and ran reports whether it was.
func (m *Manager) start(n *config.Network, onlyRunning bool) (ran bool, err error) {
	l, err := m.lock(n.Name)
	if err != nil {
		return false, err
	}
	defer l.Release()
	m.makePortsLock()

	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil || !had && onlyRunning {
		return false, err
	}
	return true, m.startLocked(n, rec, had)
}

// startLocked is Start with the network's lock held and its record read.
func (m *Manager) startLocked(n *config.Network, rec record, had bool) (err error) {
	if !had {
		rec = record{Network: n.Name, Bridge: n.Bridge, Started: time.Now().UTC()}
	} else if rec.Bridge != n.Bridge {
		return fmt.Errorf("vnet: network %s is running on bridge %s, not %s; stop it first", n.Name, rec.Bridge, n.Bridge)
	}
	rec.Mode = string(n.Mode)

	if n.Mode == config.ModeBridge {
		if err := checkForeignBridge(n); err != nil {
			return err
		}
		if err := m.syncIsolation(n, &rec); err != nil {
			return err
		}
		return m.Records.Write(recordName(n.Name), &rec)
	}
	bridgeMissing, err := checkStart(n, had)
	if err != nil {
		return err
	}
	var ov *overlayPlan
	ov, n, err = m.planOverlay(n, &rec)
	if err != nil {
		return err
	}
	fw, old, err := m.startFirewalls(n, &rec)
	if err != nil {
		return err
	}

	// From here on the host changes; undo on failure.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if !had {
		// Recorded before it is created: killed at any point from here,
		// Start leaves Stop a record of the bridge it may have created and
		// of the backend whose tables may exist.
		rec.CreatedBridge, rec.Backend = bridgeMissing, fw.Name()
		if err := m.Records.Write(recordName(n.Name), &rec); err != nil {
			return err
		}
		undo = append(undo, func() { _ = m.Records.Remove(recordName(n.Name)) })
	}

	if err := m.startNetwork(n, &rec, had, fw, old, ov, &undo); err != nil {
		return err
	}
	rec.Backend = fw.Name()
	return m.Records.Write(recordName(n.Name), &rec)
}

// startNetwork is what Start changes on the host, in order: the bridge and
// its overlay, forwarding, the firewall (switching backends when the config
// did), forwards, isolation, aggregate shaping, DHCP. What it creates goes
// on undo, for a failed Start.
func (m *Manager) startNetwork(n *config.Network, rec *record, had bool, fw, old firewall.Backend, ov *overlayPlan, undo *[]func()) error {
	if n.Mode != config.ModeRoute {
		if err := m.startBridge(n, rec, had, undo); err != nil {
			return err
		}
		if err := m.startOverlay(n, ov, rec, undo); err != nil {
			return err
		}
	}
	if err := m.keepUplinkRA(n); err != nil {
		return err
	}
	if n.Mode != config.ModeIsolated {
		if err := link.EnableForwarding(n.Gateway6.IsValid()); err != nil {
			return fmt.Errorf("vnet: network %s: %w", n.Name, err)
		}
	}
	if old != nil {
		if err := m.switchBackend(n, rec, old, fw); err != nil {
			return err
		}
	}
	err := fw.Ensure(m.networkRules(n))
	if !had {
		*undo = append(*undo, func() { _ = fw.Remove(n.Name) })
	}
	if err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	if err := forgetRemovedPeers(n, ov); err != nil {
		return err
	}
	if err := m.startForwards(n, rec, fw); err != nil {
		return err
	}
	if err := m.syncIsolation(n, rec); err != nil {
		return err
	}
	if err := applyAggregate(n); err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	if err := m.startDHCP(n); err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	if !had {
		*undo = append(*undo, func() { _ = m.stopDHCP(n.Name) })
	}
	return nil
}

// checkForeignBridge checks that the bridge a mode bridge network uses exists.
func checkForeignBridge(n *config.Network) error {
	br, err := link.Get(n.Bridge)
	if errors.Is(err, link.ErrNotFound) {
		return fmt.Errorf("vnet: network %s: mode bridge uses an existing bridge and %s does not exist; create it (e.g. with your distribution's network config) or choose mode nat", n.Name, n.Bridge)
	}
	if err != nil {
		return fmt.Errorf("vnet: %w", err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("vnet: network %s: %s is a %s link, not a bridge", n.Name, n.Bridge, br.Type())
	}
	return nil
}

// checkStart checks everything that can be checked before Start touches
// the host: the bridge's name, the subnets' routes. It reports whether the
// bridge is missing (Start creates it).
func checkStart(n *config.Network, had bool) (bridgeMissing bool, err error) {
	route := n.Mode == config.ModeRoute
	skip := 0
	if route {
		// No bridge: the guests' host routes, once ports attach, are ours.
	} else if br, err := link.Get(n.Bridge); err == nil {
		if br.Type() != "bridge" {
			return false, fmt.Errorf("vnet: network %s: %s exists and is a %s link, not a bridge; choose another bridge name or remove it", n.Name, n.Bridge, br.Type())
		}
		skip = br.Attrs().Index
	} else if errors.Is(err, link.ErrNotFound) {
		bridgeMissing = true
	} else {
		return false, fmt.Errorf("vnet: %w", err)
	}
	for _, sn := range n.Subnets() {
		if route && had {
			break
		}
		msg, err := link.Conflict(sn, skip)
		if err != nil {
			return false, fmt.Errorf("vnet: %w", err)
		}
		if msg != "" {
			return false, fmt.Errorf("vnet: network %s: subnet %s; choose another address or remove that route", n.Name, msg)
		}
	}
	return bridgeMissing, nil
}

// startFirewalls returns the network's firewall backend, and the one its
// rules are in when the config switched backends (nil: the same).
func (m *Manager) startFirewalls(n *config.Network, rec *record) (fw, old firewall.Backend, err error) {
	if fw, err = m.NewFirewall(n.Firewall); err != nil {
		return nil, nil, fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	if rec.Backend != "" && rec.Backend != fw.Name() {
		// The config switched backends: the old one's rules must go.
		if old, err = m.NewFirewall(rec.Backend); err != nil {
			return nil, nil, fmt.Errorf("vnet: network %s: remove rules of previous backend: %w", n.Name, err)
		}
	}
	return fw, old, nil
}

// switchBackend removes the network's rules from the backend they were in
// (old), and records the new one before its tables exist.
func (m *Manager) switchBackend(n *config.Network, rec *record, old, fw firewall.Backend) error {
	if err := old.Remove(n.Name); err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	rec.Backend = fw.Name()
	return m.Records.Write(recordName(n.Name), rec)
}

// startBridge creates (or adopts) the bridge and gives it the network's
// addresses, recording what it changed in rec and how to undo it in undo.
func (m *Manager) startBridge(n *config.Network, rec *record, had bool, undo *[]func()) error {
	br, created, err := link.EnsureBridge(link.BridgeSpec{Name: n.Bridge, MAC: bridgeMACOf(n), MTU: n.MTU, STP: n.STP, ForwardDelay: n.ForwardDelay})
	if created {
		*undo = append(*undo, func() { _ = link.Delete(n.Bridge) })
	}
	if owned := created || had && rec.CreatedBridge; owned != rec.CreatedBridge {
		// Someone else's bridge appeared since the record was written (or
		// a bridge of ours was recreated): the record follows.
		rec.CreatedBridge = owned
		if werr := m.Records.Write(recordName(n.Name), rec); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	for _, gw := range []netip.Prefix{n.Gateway, n.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		added, err := link.EnsureAddr(br, gw)
		if err != nil {
			return fmt.Errorf("vnet: network %s: %w", n.Name, err)
		}
		if added {
			gw := gw
			*undo = append(*undo, func() { _ = link.DelAddr(br, gw) })
		}
		rec.Addresses = appendUnique(rec.Addresses, gw.String())
	}
	return nil
}

// applyAggregate puts the network's aggregate limits in place (or removes
// them when the config has none).
func applyAggregate(n *config.Network) error {
	if n.Shaping == nil || n.Shaping.TotalToGuest == 0 && n.Shaping.TotalFromGuest == 0 {
		return shape.RemoveNetwork(n.Name)
	}
	return shape.ApplyNetwork(shape.NetworkSpec{
		Network:   n.Name,
		ToGuest:   shape.Limit{Rate: n.Shaping.TotalToGuest},
		FromGuest: shape.Limit{Rate: n.Shaping.TotalFromGuest},
	})
}

// NetworkByBridge is the network a hook's bridge argument means (Xen's
// bridge= key, QEMU's second script argument): the configured network using
// that bridge, or the mode route network of that name; an existing bridge that
// no config names is used as it is, in mode bridge (attach only), as Xen's
// vif-bridge and QEMU's qemu-ifup do. A bridge that neither exists nor is
// configured is an error.
func (m *Manager) NetworkByBridge(br string) (*config.Network, error) {
	if n := m.Config.NetworkByBridge(br); n != nil {
		return n, nil
	}
	if err := names.Interface(br); err != nil {
		return nil, fmt.Errorf("vnet: bridge %w", err)
	}
	l, err := link.Get(br)
	if errors.Is(err, link.ErrNotFound) {
		where := m.Config.Path
		if where == "" {
			where = "the host config (none found)"
		}
		return nil, fmt.Errorf("vnet: bridge %s does not exist and no [network.NAME] in %s names it; start its network (network-virtual start) or name an existing bridge", br, where)
	}
	if err != nil {
		return nil, fmt.Errorf("vnet: %w", err)
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("vnet: %s is a %s link, not a bridge", br, l.Type())
	}
	mode := string(config.ModeBridge)
	n, err := m.Config.Select("", &config.NetworkSpec{Bridge: &br, Mode: &mode})
	if err != nil {
		return nil, err
	}
	// Mode bridge: Start only records that we attach to it, once (Start
	// waits for the ports in flight).
	return n, m.EnsureStarted(n)
}

// bridgeMAC is the address of a bridge brouter creates: stable across
// restarts of the network (guests keep their ARP entry for the gateway),
// locally administered and unicast, derived from the network's name.
func bridgeMAC(network string) net.HardwareAddr {
	h := sha256.Sum256([]byte("brouter bridge " + network))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// rulesFor turns a network's mode into the firewall's terms.
func rulesFor(n *config.Network) firewall.NetworkRules {
	return firewall.NetworkRules{
		Network:    n.Name,
		Bridge:     n.Bridge,
		Subnets:    n.Subnets(),
		Forward:    n.Mode == config.ModeNAT || n.Mode == config.ModeRouted || n.Mode == config.ModeRoute,
		Masquerade: n.Mode == config.ModeNAT,
		// nat6: IPv6 too (config allows it in mode nat only).
		Masquerade6: n.NAT6,
		Uplink:      n.Uplink,
		Antispoof:   n.Antispoof,
		Services:    hasDNSMasq(n),
		Overlay:     overlayRules(n),
	}
}

// Stop takes the network down: every port off the bridge, our firewall rules,
// the addresses we added, and the bridge if we created it. Stopping a stopped
// network succeeds.
func (m *Manager) Stop(n *config.Network) error {
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()

	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil {
		return err
	}
	if !had {
		// A Start killed while writing its first record changed nothing
		// yet, but may have left that write's temp file.
		return m.Records.Remove(recordName(n.Name))
	}
	if rec.Mode == string(config.ModeBridge) {
		// Not our bridge: undo only what we did to the ports we attached,
		// and leave the bridge and its other ports (the physical NIC) alone.
		if err := m.detachRecordedPorts(n); err != nil {
			return fmt.Errorf("vnet: stop network %s: %w", n.Name, err)
		}
		return m.Records.Remove(recordName(n.Name))
	}
	br, err := link.Get(rec.Bridge)
	switch {
	case errors.Is(err, link.ErrNotFound):
		br = nil
	case err != nil:
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	errs := m.stopNetwork(n, &rec, br)
	if err := errors.Join(errs...); err != nil {
		// Keep the record so a second stop can finish the job.
		return fmt.Errorf("vnet: stop network %s: %w", n.Name, err)
	}
	return m.Records.Remove(recordName(n.Name))
}

// stopNetwork undoes what Start did: the ports (ours exactly as recorded,
// then whatever else is on the bridge), aggregate shaping, DHCP, the
// overlay, the firewall and forwards, the addresses and the bridge we
// created. It goes on past failures and returns them all.
func (m *Manager) stopNetwork(n *config.Network, rec *record, br netlink.Link) []error {
	var errs []error
	if err := m.detachRecordedPorts(n); err != nil {
		errs = append(errs, err)
	}
	if br != nil {
		ports, err := link.Ports(br)
		if err != nil {
			return append(errs, err)
		}
		for _, p := range ports {
			errs = append(errs, link.Detach(p.Name))
		}
	}
	errs = append(errs, shape.RemoveNetwork(n.Name), m.stopDHCP(n.Name), m.stopOverlay(n.Name, rec))
	if rec.Backend != "" {
		fw, err := m.NewFirewall(rec.Backend)
		if err == nil {
			err = fw.Remove(n.Name)
		}
		if err == nil {
			err = m.stopForwards(n.Name)
		}
		errs = append(errs, err)
	}
	if br != nil {
		for _, s := range rec.Addresses {
			if p, perr := netip.ParsePrefix(s); perr == nil {
				errs = append(errs, link.DelAddr(br, p))
			}
		}
		if rec.CreatedBridge {
			errs = append(errs, link.Delete(rec.Bridge))
		}
	}
	return errs
}

// PortStatus is one port of a running network.
type PortStatus struct {
	link.Port
	// Shaping as the kernel has it; empty when the port is not shaped.
	ToGuest   string `json:"to_guest,omitempty"`
	FromGuest string `json:"from_guest,omitempty"`
	Priority  string `json:"priority,omitempty"`
	// Routed: mode route, the guest addresses routed to the port.
	Routed []string `json:"routed,omitempty"`
}

// Status describes a network as the kernel and our records see it.
type Status struct {
	Network       string         `json:"network"`
	Bridge        string         `json:"bridge"`
	Running       bool           `json:"running"`
	Mode          string         `json:"mode"`
	Address       string         `json:"address,omitempty"`
	Address6      string         `json:"address6,omitempty"`
	Addresses     []string       `json:"addresses,omitempty"` // what the bridge carries now
	Backend       string         `json:"backend,omitempty"`
	CreatedBridge bool           `json:"created_bridge"`
	Ports         []PortStatus   `json:"ports"`
	Routes        []string       `json:"routes"`
	Firewall      []string       `json:"firewall"`
	DHCP          *DHCPStatus    `json:"dhcp,omitempty"`
	Overlay       *OverlayStatus `json:"overlay,omitempty"`
	Problems      []string       `json:"problems,omitempty"`
	// Warnings are risks, not faults (status still exits 0): e.g. a guest
	// address given by hand inside the allocator's pool.
	Warnings []string `json:"warnings,omitempty"`
}

// Status reports on the network. Running means Start has run and the bridge
// exists; Problems lists what differs from what Start set up (the bridge,
// its addresses, the firewall backend's Check of the network's rules).
func (m *Manager) Status(n *config.Network) (*Status, error) {
	st := &Status{Network: n.Name, Bridge: n.Bridge, Mode: string(n.Mode), Ports: []PortStatus{}, Routes: []string{}, Firewall: []string{}}
	if n.Gateway.IsValid() {
		st.Address = n.Gateway.String()
	}
	if n.Gateway6.IsValid() {
		st.Address6 = n.Gateway6.String()
	}
	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil {
		return nil, err
	}
	br, err := link.Get(n.Bridge)
	if err != nil && !errors.Is(err, link.ErrNotFound) {
		return nil, fmt.Errorf("vnet: %w", err)
	}
	if had {
		st.Bridge, st.Mode, st.Backend, st.CreatedBridge = rec.Bridge, rec.Mode, rec.Backend, rec.CreatedBridge
		if st.Problems, err = m.problems(n, &rec); err != nil {
			return nil, err
		}
	}
	if n.Mode == config.ModeRoute {
		// No bridge: the network is its records, its ports the recorded ones.
		st.Running = had
		if err := m.describeRoutedPorts(n, st); err != nil {
			return nil, err
		}
	} else {
		st.Running = had && br != nil
	}
	if br != nil {
		if err := m.describeBridge(br, st); err != nil {
			return nil, err
		}
	}
	m.dhcpStatus(n, st)
	if had {
		st.Overlay, _ = m.overlayStatus(n, &rec) // its problems are among problems()'s
	}
	st.Warnings = m.poolWarnings(n)
	if st.Backend != "" {
		fw, err := m.NewFirewall(st.Backend)
		if err == nil {
			st.Firewall, err = fw.List(n.Name)
		}
		if err != nil {
			st.Problems = append(st.Problems, err.Error())
		}
		if st.Firewall == nil {
			st.Firewall = []string{}
		}
	}
	return st, nil
}

func (m *Manager) describeBridge(br netlink.Link, st *Status) error {
	var err error
	ports, err := link.Ports(br)
	if err != nil {
		return fmt.Errorf("vnet: %w", err)
	}
	for _, p := range ports {
		st.Ports = append(st.Ports, portStatus(p))
	}
	if st.Routes, err = link.Routes(br); err != nil {
		return fmt.Errorf("vnet: %w", err)
	}
	if st.Routes == nil {
		st.Routes = []string{}
	}
	addrs, err := link.Addrs(br)
	if err != nil {
		return fmt.Errorf("vnet: %w", err)
	}
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, a.String())
	}
	return nil
}

func (m *Manager) describeRoutedPorts(n *config.Network, st *Status) error {
	names, err := m.Records.List(portDir(n.Name))
	if err != nil {
		return err
	}
	for _, f := range names {
		var pr portRecord
		if ok, err := m.Records.Read(portDir(n.Name)+"/"+f, &pr); err != nil || !ok {
			continue
		}
		l, err := link.Get(pr.Port)
		if err != nil {
			st.Problems = append(st.Problems, "port "+pr.Port+" is recorded but gone; detach it (vif-brouter offline)")
			continue
		}
		ps := portStatus(link.Describe(l))
		ps.Routed = pr.Routed
		st.Ports = append(st.Ports, ps)
	}
	return nil
}

// portStatus adds the port's shaping, as the kernel has it.
func portStatus(p link.Port) PortStatus {
	ps := PortStatus{Port: p}
	if sh, err := shape.Describe(p.Name); err == nil && sh.Shaped() {
		ps.ToGuest, ps.FromGuest = sh.ToGuest.String(), sh.FromGuest.String()
		ps.Priority = sh.Priority.String()
	}
	return ps
}

func appendUnique(s []string, v string) []string {
	if contains(s, v) {
		return s
	}
	return append(s, v)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// EnsureStarted starts the network unless it is running already (its record
// is there and so is its bridge). It is the cheap path for callers that
// attach ports to networks that are nearly always up, such as CNI ADD: a
// full Start re-applies the firewall, which costs tens of milliseconds.
func (m *Manager) EnsureStarted(n *config.Network) error {
	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil {
		return err
	}
	if had && rec.Bridge == n.Bridge && rec.Mode == string(n.Mode) {
		if n.Mode == config.ModeRoute {
			return nil
		}
		if ok, err := link.Exists(n.Bridge); err == nil && ok {
			return nil
		}
	}
	return m.Start(n)
}
