package vnet

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/brouter/brouter/shared/config"
)

// portRecord remembers a port so Detach and Stop can undo exactly what Attach did.
//
// It is written before Attach changes anything and removed only after Detach
// has undone everything, so a port without a record has nothing installed.
// What the firewall installed exactly is the firewall backend's own record
// (firewall/installed.go); this one says which backend holds the port's
// entries and what they are for.
type portRecord struct {
	// V is the record's format: from 2 on, Guard says whether the port has
	// antispoof entries (before, Firewall alone meant "antispoof entries");
	// from 4 on, Request holds the request and Aggregate says whether the
	// port joined the network's aggregate shaping.
	V        int       `json:"v,omitempty"`
	Network  string    `json:"network"`
	Port     string    `json:"port"`
	Bridge   string    `json:"bridge,omitempty"`   // bridged ports
	Routed   []string  `json:"routed,omitempty"`   // mode route: guest addresses routed to the port
	Local    []string  `json:"local,omitempty"`    // mode route: gateway addresses put on the port
	NDProxy  []ndProxy `json:"nd_proxy,omitempty"` // mode route: proxy NDP entries made for the guest (ipv6.go)
	Firewall string    `json:"firewall,omitempty"` // backend holding the port's antispoof rules
	SetUp    bool      `json:"set_up,omitempty"`   // the port was down and Attach set it up
	OldMAC   string    `json:"old_mac,omitempty"`  // the port's MAC before Attach changed it
	OldMTU   int       `json:"old_mtu,omitempty"`  // the port's MTU before Attach changed it
	Lease    string    `json:"lease,omitempty"`    // guest MAC registered as a static DHCP lease
	Owned    bool      `json:"owned,omitempty"`    // Detach deletes the device
	IPv6Off  bool      `json:"ipv6_off,omitempty"` // Attach turned the port's IPv6 off
	Claimed  bool      `json:"claimed,omitempty"`  // the guest's addresses are claimed from the allocator
	Isolated bool      `json:"isolated,omitempty"` // bridge port flag isolated (isolate_guests)
	Overlay  string    `json:"overlay,omitempty"`  // guest MAC given to the firewall as a local guest of the network's overlay
	Attached time.Time `json:"attached"`

	Guard    *guardRecord `json:"guard,omitempty"`    // antispoof entries (V 2; nil: none)
	Forwards []Forward    `json:"forwards,omitempty"` // published ports (and claimed host ports)

	// Aggregate: the port's shaping has classes in the network's aggregates
	// (V 4; older records: unknown, taken as true).
	Aggregate bool `json:"aggregate,omitempty"`
	// Request is the port's request as Attach applied it, port rule
	// included (V 4): enough to apply the port's whole state again from
	// the record alone (reconcile). Older records have none.
	Request *portRequestRecord `json:"request,omitempty"`
}

// guardRecord is a port's antispoof entries, as asked of the firewall.
type guardRecord struct {
	MAC     string       `json:"mac"`
	IPs     []netip.Addr `json:"ips,omitempty"`
	Bridged bool         `json:"bridged"`
	Service bool         `json:"service,omitempty"` // the service guard only (firewall.PortRules.ServiceOnly)
}

// portRequestRecord is a PortRequest as a port record keeps it (its Forwards
// are the record's own).
type portRequestRecord struct {
	MAC       string              `json:"mac,omitempty"`
	MTU       int                 `json:"mtu,omitempty"`
	GuestMAC  string              `json:"guest_mac,omitempty"`
	IPs       []netip.Addr        `json:"ips,omitempty"`
	Antispoof bool                `json:"antispoof,omitempty"`
	Shaping   *config.PortShaping `json:"shaping,omitempty"` // nil: the network's config decides
	Hairpin   bool                `json:"hairpin,omitempty"`
}

const portRecordVersion = 4

func portDir(network string) string              { return "ports/" + network }
func portRecordName(network, port string) string { return portDir(network) + "/" + port + ".json" }

// recordRequest is p as a port record keeps it.
func recordRequest(p PortRequest) *portRequestRecord {
	r := &portRequestRecord{MTU: p.MTU, IPs: slices.Clone(p.IPs), Antispoof: p.Antispoof, Hairpin: p.Hairpin}
	if p.MAC != nil {
		r.MAC = p.MAC.String()
	}
	if p.GuestMAC != nil {
		r.GuestMAC = p.GuestMAC.String()
	}
	if p.Shaping != nil {
		sh := *p.Shaping
		r.Shaping = &sh
	}
	return r
}

// request is the PortRequest that Attach applied to the recorded port;
// false for a record older than version 4, which does not hold it.
func (pr *portRecord) request() (PortRequest, bool) {
	r := pr.Request
	if pr.V < 4 || r == nil {
		return PortRequest{}, false
	}
	p := PortRequest{Name: pr.Port, MTU: r.MTU, IPs: slices.Clone(r.IPs), Antispoof: r.Antispoof,
		Hairpin: r.Hairpin, Owned: pr.Owned, Forwards: slices.Clone(pr.Forwards)}
	p.MAC, _ = net.ParseMAC(r.MAC)
	p.GuestMAC, _ = net.ParseMAC(r.GuestMAC)
	if r.Shaping != nil {
		sh := *r.Shaping
		p.Shaping = &sh
	}
	return p, true
}

// inAggregate reports whether undoing the port's shaping touches the
// network's aggregates (an old record cannot say: it may).
func (pr *portRecord) inAggregate() bool { return pr.Aggregate || pr.V < 4 }

// readPort reads network's record of port; false when there is none.
func (m *Manager) readPort(network, port string) (portRecord, bool, error) {
	var pr portRecord
	ok, err := m.Records.Read(portRecordName(network, port), &pr)
	return pr, ok, err
}

func (m *Manager) writePort(pr *portRecord) error {
	return m.Records.Write(portRecordName(pr.Network, pr.Port), pr)
}

func (m *Manager) removePort(network, port string) error {
	return m.Records.Remove(portRecordName(network, port))
}
