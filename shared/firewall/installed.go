package firewall

import (
	"net"
	"net/netip"
)

// What the nftables backend installed, per port, kept by the backend itself.
//
// Finding a port's current set and map elements means reading (dumping)
// whole sets, whose size grows with the guests. The backend avoids that by
// remembering what it installed for every port, as kube-proxy's nftables
// proxier does, in small records of its own (Records, under run_dir): the
// change from that to what is wanted is sent as is, and the kernel checks it
// as it applies the batch (nftables_ports.go, nftables_forwards.go). Callers
// only ever say what they want.
//
//	nftables/NET/network.json      the network's records are complete (below)
//	nftables/NET/guard/PORT.json   the port's antispoof entries
//	nftables/NET/fwd/PORT.json     the port's published ports
//
// A port record is marked unknown before a change and rewritten after it, so
// a process killed midway leaves "unknown" (the next operation reads the
// kernel) and never a record that disagrees with the kernel. The network
// record is written before the backend creates any of the network's tables:
// from then on a port without a record has nothing installed. Without it
// (tables created by an older version, or no Records at all) every port is
// unknown and the kernel is read: correct, only slower. Operations on one
// port are serialised by the caller; different ports never share a record.

// Records is a store of small records (state.Store is one).
type Records interface {
	Read(name string, v any) (bool, error)
	Write(name string, v any) error
	Remove(name string) error
	List(sub string) ([]string, error)
}

func recNetwork(network string) string      { return "nftables/" + network + "/network.json" }
func recGuardDir(network string) string     { return "nftables/" + network + "/guard" }
func recFwdDir(network string) string       { return "nftables/" + network + "/fwd" }
func recGuard(network, port string) string  { return recGuardDir(network) + "/" + port + ".json" }
func recFwd(network, port string) string    { return recFwdDir(network) + "/" + port + ".json" }
func recNetworkNote(network string) netNote { return netNote{Network: network} }

type netNote struct {
	Network string `json:"network"`
}

// guardRec is a port's antispoof entries as recorded.
type guardRec struct {
	Known   bool         `json:"known"`
	MAC     string       `json:"mac,omitempty"`
	IPs     []netip.Addr `json:"ips,omitempty"`
	Bridged bool         `json:"bridged,omitempty"`
	Service bool         `json:"service,omitempty"` // ServiceOnly
}

// fwdRec is a port's published ports as recorded.
type fwdRec struct {
	Known    bool      `json:"known"`
	Forwards []Forward `json:"forwards,omitempty"`
}

// complete reports whether the network's port records are complete (a port
// without one has nothing installed).
func (b *nftBackend) complete(network string) bool {
	if b.rec == nil {
		return false
	}
	var n netNote
	ok, err := b.rec.Read(recNetwork(network), &n)
	return err == nil && ok
}

// noteTables records, before the backend creates a table of the network,
// that its records are complete from now on.
func (b *nftBackend) noteTables(network string) error {
	if b.rec == nil || b.complete(network) {
		return nil
	}
	if err := b.rec.Write(recNetwork(network), recNetworkNote(network)); err != nil {
		return errorf("nftables: network %s: %w", network, err)
	}
	return nil
}

// guardInstalled returns what is installed for the port's antispoof:
// nil when unknown, a PortRules without MAC when nothing is.
func (b *nftBackend) guardInstalled(network, port string) *PortRules {
	if b.rec == nil {
		return nil
	}
	var r guardRec
	ok, err := b.rec.Read(recGuard(network, port), &r)
	switch {
	case err != nil:
		return nil
	case !ok && b.complete(network):
		return &PortRules{Network: network, Port: port}
	case !ok || !r.Known:
		return nil
	}
	if r.Service {
		return portHint(network, port, &PortRules{Network: network, Port: port, Bridged: r.Bridged, ServiceOnly: true})
	}
	mac, err := net.ParseMAC(r.MAC)
	if err != nil {
		return nil
	}
	return portHint(network, port, &PortRules{Network: network, Port: port, MAC: mac, IPs: r.IPs, Bridged: r.Bridged})
}

// fwdInstalled returns what is installed for the port's published ports:
// nil when unknown.
func (b *nftBackend) fwdInstalled(network, port string) *Forwards {
	if b.rec == nil {
		return nil
	}
	var r fwdRec
	ok, err := b.rec.Read(recFwd(network, port), &r)
	switch {
	case err != nil:
		return nil
	case !ok && b.complete(network):
		return &Forwards{Network: network, Port: port}
	case !ok || !r.Known:
		return nil
	}
	return fwdHint(network, port, &Forwards{Network: network, Port: port, Forwards: r.Forwards})
}

// changing marks a port record unknown before a change of its entries.
func (b *nftBackend) changing(name string, v any) error {
	if b.rec == nil {
		return nil
	}
	if err := b.rec.Write(name, v); err != nil {
		return errorf("nftables: %w", err)
	}
	return nil
}

// installedGuard records the port's antispoof entries after a change (nil: none).
func (b *nftBackend) installedGuard(network, port string, p *PortRules) error {
	if b.rec == nil {
		return nil
	}
	if p == nil {
		return b.forget(recGuard(network, port))
	}
	rec := guardRec{Known: true, MAC: p.MAC.String(), IPs: p.IPs, Bridged: p.Bridged, Service: p.ServiceOnly}
	if p.ServiceOnly {
		rec.MAC = ""
	}
	return b.write(recGuard(network, port), rec)
}

// installedForwards records the port's published ports after a change (none: no record).
func (b *nftBackend) installedForwards(network, port string, l []Forward) error {
	if b.rec == nil {
		return nil
	}
	if len(l) == 0 {
		return b.forget(recFwd(network, port))
	}
	return b.write(recFwd(network, port), fwdRec{Known: true, Forwards: l})
}

func (b *nftBackend) write(name string, v any) error {
	if err := b.rec.Write(name, v); err != nil {
		return errorf("nftables: %w", err)
	}
	return nil
}

func (b *nftBackend) forget(name string) error {
	if err := b.rec.Remove(name); err != nil {
		return errorf("nftables: %w", err)
	}
	return nil
}

// forgetNetwork removes every record of the network (after its tables went):
// the port records first, the network record last.
func (b *nftBackend) forgetNetwork(network string) error {
	if b.rec == nil {
		return nil
	}
	for _, dir := range []string{recGuardDir(network), recFwdDir(network)} {
		names, err := b.rec.List(dir)
		if err != nil {
			return errorf("nftables: network %s: %w", network, err)
		}
		for _, n := range names {
			if err := b.forget(dir + "/" + n); err != nil {
				return err
			}
		}
	}
	return b.forget(recNetwork(network))
}

// forgetVanished removes the port records that speak of tables that do not
// exist: the guard records of ports guarded in one of tables (bridged or
// routed), and, with fwd, every published-ports record.
func (b *nftBackend) forgetVanished(network string, tables []nftPortTable, fwd bool) error {
	if b.rec == nil {
		return nil
	}
	gone := map[bool]bool{}
	for _, t := range tables {
		gone[t.bridged] = true
	}
	dirs := map[string]func(name string) bool{
		recGuardDir(network): func(name string) bool {
			var r guardRec
			ok, err := b.rec.Read(name, &r)
			// An unknown record stays: it makes the kernel be read, which is right anyway.
			return err == nil && ok && r.Known && gone[r.Bridged]
		},
	}
	if fwd {
		dirs[recFwdDir(network)] = func(string) bool { return true }
	}
	for dir, stale := range dirs {
		names, err := b.rec.List(dir)
		if err != nil {
			return errorf("nftables: network %s: %w", network, err)
		}
		for _, n := range names {
			if stale(dir + "/" + n) {
				if err := b.forget(dir + "/" + n); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
