package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	gnftables "github.com/google/nftables"
	"sigs.k8s.io/knftables"
)

// Per-port antispoof in nftables.
//
// Rules are fixed; guests are set elements keyed by port name, so attaching a
// guest adds elements and never rules. A network's guarded ports live in tables
// of their own, never in the network's "inet brouter-NET" table (which Ensure
// replaces wholesale), so Ensure never disturbs them:
//
//	bridge brouter-NET        bridged ports: hook prerouting, so both bridged
//	                          and to-host traffic are checked; ARP here too.
//	inet   brouter-NET.ports  routed ports: hook prerouting, priority raw
//	                          (before conntrack: spoofed packets leave no entry).
//	arp    brouter-NET        routed ports' ARP (the inet family never sees ARP).
//
// ("." cannot occur in a network name, so "brouter-NET.ports" never collides
// with another network's table.) Each table has the sets
//
//	as_ports  ifname               the guarded ports
//	as_mac    ifname . ether_addr  the port's MAC
//	as_ip4    ifname . ipv4_addr   its IPv4 addresses
//	as_ip6    ifname . ipv6_addr   its IPv6 addresses (not in the arp table)
//
// A table is created (with its rules) the first time a port needs it, and
// deleted in the same transaction that removes its last port.
//
// Set elements are read and written over netlink (github.com/google/nftables)
// rather than through the nft tool: `nft -f` loads every element of a set to
// delete one, so its cost grows with the number of guests, while a netlink
// batch costs about the same at 10 and at 1000 ports. The batch that changes a
// port's elements (only those that differ) is one nf_tables transaction:
// packets see the old entries or the new ones. Tables, chains and rules (rare)
// go through knftables as text.

const (
	setPorts = "as_ports"
	setMAC   = "as_mac"
	setIP4   = "as_ip4"
	setIP6   = "as_ip6"
)

var nftSetTypes = map[string]string{
	setPorts: "ifname",
	setMAC:   "ifname . ether_addr",
	setIP4:   "ifname . ipv4_addr",
	setIP6:   "ifname . ipv6_addr",
}

// nftPortTable is one of the tables holding a network's guarded ports.
type nftPortTable struct {
	family  knftables.Family
	nl      gnftables.TableFamily
	name    string
	bridged bool     // holds bridged ports (else routed ports)
	sets    []string // as_ports first
}

func nftPortTables(network string) []nftPortTable {
	all := []string{setPorts, setMAC, setIP4, setIP6}
	return []nftPortTable{
		{family: knftables.BridgeFamily, nl: gnftables.TableFamilyBridge, name: nftTableName(network), bridged: true, sets: all},
		{family: knftables.InetFamily, nl: gnftables.TableFamilyINet, name: nftTableName(network) + ".ports", sets: all},
		{family: knftables.ARPFamily, nl: gnftables.TableFamilyARP, name: nftTableName(network), sets: all[:3]},
	}
}

func (t nftPortTable) String() string { return string(t.family) + " " + t.name }

// nftChain is a chain of a port table and its rules, in order.
type nftChain struct {
	name     string
	hook     knftables.BaseChainHook // "" for a regular chain
	priority knftables.BaseChainPriority
	rules    []string
}

var (
	nftARPRules = []string{
		// Only Ethernet/IPv4 ARP: the fields below are at fixed offsets.
		"arp htype != 1 drop",
		"arp ptype != ip drop",
		"arp hlen != 6 drop",
		"arp plen != 4 drop",
		"iifname . arp saddr ether != @" + setMAC + " drop",
		"arp saddr ip " + probeSrc4.String() + " accept",
		"iifname . arp saddr ip @" + setIP4 + " accept",
		"drop",
	}
	nftIP4Rules = []string{
		"iifname . ip saddr @" + setIP4 + " accept",
		fmt.Sprintf("udp sport %d udp dport %d accept", dhcp4Client[0], dhcp4Client[1]),
		"drop",
	}
	nftIP6Rules = []string{
		"iifname . ip6 saddr @" + setIP6 + " accept",
		fmt.Sprintf("ip6 saddr { %s, %s } accept", unspecified6.Addr(), linkLocal6),
		fmt.Sprintf("udp sport %d udp dport %d accept", dhcp6Client[0], dhcp6Client[1]),
		"drop",
	}
)

// chains returns the table's chains. Every check of a port happens in the
// chains jumped to from the base chain only for ports in as_ports, so frames
// from other ports cost one set lookup.
func (t nftPortTable) chains() []nftChain {
	macRule := "iifname . ether saddr != @" + setMAC + " drop"
	switch {
	case t.family == knftables.ARPFamily:
		return []nftChain{
			{name: "input", hook: knftables.InputHook, priority: knftables.FilterPriority,
				rules: []string{"iifname @" + setPorts + " jump antispoof_arp"}},
			{name: "antispoof_arp", rules: nftARPRules},
		}
	case t.bridged:
		return []nftChain{
			{name: "prerouting", hook: knftables.PreroutingHook, priority: knftables.FilterPriority,
				rules: []string{"iifname @" + setPorts + " jump antispoof"}},
			{name: "antispoof", rules: []string{
				macRule,
				// A tagged frame's inner header would escape the checks below.
				"ether type { 8021q, 8021ad } drop",
				"ether type arp jump antispoof_arp",
				"ether type ip jump antispoof_ip4",
				"ether type ip6 jump antispoof_ip6",
			}},
			{name: "antispoof_arp", rules: nftARPRules},
			{name: "antispoof_ip4", rules: nftIP4Rules},
			{name: "antispoof_ip6", rules: nftIP6Rules},
		}
	default: // inet, routed ports
		return []nftChain{
			{name: "prerouting", hook: knftables.PreroutingHook, priority: knftables.RawPriority,
				rules: []string{"iifname @" + setPorts + " jump antispoof"}},
			{name: "antispoof", rules: []string{
				macRule,
				"meta nfproto ipv4 jump antispoof_ip4",
				"meta nfproto ipv6 jump antispoof_ip6",
			}},
			{name: "antispoof_ip4", rules: nftIP4Rules},
			{name: "antispoof_ip6", rules: nftIP6Rules},
		}
	}
}

// nftPortSetup adds to tx what creates table t, or brings an existing one
// back to the current rules, without touching its set elements: add (create
// if missing) the table, sets and chains, then flush the chains and add their
// rules. Applied atomically, so concurrent setups converge on one copy of each rule.
func nftPortSetup(tx *knftables.Transaction, t nftPortTable, network string) {
	tx.Add(&knftables.Table{Family: t.family, Name: t.name,
		Comment: knftables.PtrTo("brouter network " + network + ": per-port antispoof")})
	for _, s := range t.sets {
		tx.Add(&knftables.Set{Family: t.family, Table: t.name, Name: s, Type: nftSetTypes[s]})
	}
	chains := t.chains()
	for _, c := range chains {
		ch := &knftables.Chain{Family: t.family, Table: t.name, Name: c.name}
		if c.hook != "" {
			ch.Type = knftables.PtrTo(knftables.FilterType)
			ch.Hook = knftables.PtrTo(c.hook)
			ch.Priority = knftables.PtrTo(c.priority)
		}
		tx.Add(ch)
		tx.Flush(ch)
	}
	for _, c := range chains {
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Family: t.family, Table: t.name, Chain: c.name, Rule: r})
		}
	}
}

// Set element keys, as the kernel stores them: each field of a concatenation
// is padded to a multiple of 4 bytes; an ifname is 16 bytes, NUL-padded.
const ifnameKeyLen = 16

func keyIfname(port string) []byte {
	k := make([]byte, ifnameKeyLen)
	copy(k, port)
	return k
}

func keyMAC(port string, mac net.HardwareAddr) []byte {
	return append(append(keyIfname(port), mac...), 0, 0)
}

func keyAddr(port string, a netip.Addr) []byte { return append(keyIfname(port), a.AsSlice()...) }

// portElements returns, per set of t, the keys of port p's elements.
func (t nftPortTable) portElements(p PortRules) map[string][][]byte {
	v4, v6 := p.addrs()
	out := map[string][][]byte{
		setPorts: {keyIfname(p.Port)},
		setMAC:   {keyMAC(p.Port, p.MAC)},
	}
	for _, a := range v4 {
		out[setIP4] = append(out[setIP4], keyAddr(p.Port, a))
	}
	if slices.Contains(t.sets, setIP6) {
		for _, a := range v6 {
			out[setIP6] = append(out[setIP6], keyAddr(p.Port, a))
		}
	}
	return out
}

// describeKey renders a key of set as nft prints it ("vif1.0" . 10.0.0.1).
func describeKey(set string, k []byte) string {
	name, _, _ := bytes.Cut(k[:min(len(k), ifnameKeyLen)], []byte{0})
	s := `"` + string(name) + `"`
	rest := k[min(len(k), ifnameKeyLen):]
	switch {
	case set == setMAC && len(rest) >= 6:
		s += " . " + net.HardwareAddr(rest[:6]).String()
	case (set == setIP4 && len(rest) == 4) || (set == setIP6 && len(rest) == 16):
		a, _ := netip.AddrFromSlice(rest)
		s += " . " + a.String()
	}
	return s
}

// nftPortOp is what syncPort needs from netlink (a *gnftables.Conn; tests may fake it).
type nftPortOp interface {
	ListTables() ([]*gnftables.Table, error)
	GetSetElements(s *gnftables.Set) ([]gnftables.SetElement, error)
	SetAddElements(s *gnftables.Set, vals []gnftables.SetElement) error
	SetDeleteElements(s *gnftables.Set, vals []gnftables.SetElement) error
	DelTable(t *gnftables.Table)
	Flush() error
}

// syncPort makes port's entries in network's port tables be want's (nil:
// none), creating the table that needs it. Tables stay until the network is
// removed: a guarded port is then only ever a change of set elements.
func (b *nftBackend) syncPort(network, port string, want *PortRules) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var missing []nftPortTable
		conn, cerr := gnftables.New(gnftables.AsLasting())
		if cerr != nil {
			return errorf("nftables: netlink: %w", cerr)
		}
		missing, err = planPortSync(conn, network, port, want)
		_ = conn.CloseLasting()
		if err == nil && len(missing) == 0 {
			return nil
		}
		if len(missing) > 0 {
			if err := b.setupPortTables(network, missing); err != nil {
				return err
			}
			err = fmt.Errorf("table %s vanished right after its creation", missing[0])
			continue // the tables exist now: sync again
		}
		// A concurrent change (an element or table that vanished between
		// reading and writing) fails the whole batch, which changed nothing: retry.
	}
	return errorf("nftables: port %s: %w", port, err)
}

// planPortSync queues on conn, and flushes as one batch, the changes that make
// port's entries be want's. It returns the tables that must be created first
// (then nothing was changed).
func planPortSync(conn nftPortOp, network, port string, want *PortRules) ([]nftPortTable, error) {
	existing, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	exists := func(t nftPortTable) bool {
		return slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name })
	}
	prefix := keyIfname(port)
	var missing []nftPortTable
	for _, t := range nftPortTables(network) {
		here := want != nil && want.Bridged == t.bridged
		if !exists(t) {
			if here {
				missing = append(missing, t)
			}
			continue
		}
		table := &gnftables.Table{Family: t.nl, Name: t.name}
		old := map[string][]gnftables.SetElement{}
		otherPorts := false
		for _, s := range t.sets {
			elems, err := conn.GetSetElements(&gnftables.Set{Table: table, Name: s})
			if errors.Is(err, syscall.ENOENT) {
				if here {
					missing = append(missing, t) // table without the set: set it up again
					break
				}
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("list set %s %s: %w", t, s, err)
			}
			for _, e := range elems {
				if bytes.HasPrefix(e.Key, prefix) {
					old[s] = append(old[s], gnftables.SetElement{Key: e.Key})
				} else if s == setPorts {
					otherPorts = true
				}
			}
		}
		if !here && !otherPorts && len(old) == 0 {
			continue // nothing of this port here
		}
		var add map[string][][]byte
		if here {
			add = t.portElements(*want)
		}
		// Only the difference: an unchanged port costs no transaction at all,
		// and the kernel's commit is slower when it deletes something.
		for _, s := range t.sets {
			var del []gnftables.SetElement
			for _, e := range old[s] {
				if i := slices.IndexFunc(add[s], func(k []byte) bool { return bytes.Equal(k, e.Key) }); i >= 0 {
					add[s] = slices.Delete(add[s], i, i+1) // already there
				} else {
					del = append(del, e)
				}
			}
			if len(del) > 0 {
				if err := conn.SetDeleteElements(&gnftables.Set{Table: table, Name: s}, del); err != nil {
					return nil, err
				}
			}
			if len(add[s]) > 0 {
				elems := make([]gnftables.SetElement, len(add[s]))
				for i, k := range add[s] {
					elems[i].Key = k
				}
				if err := conn.SetAddElements(&gnftables.Set{Table: table, Name: s}, elems); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	return nil, conn.Flush()
}

// setupPortTables creates tables (or refreshes their rules) in one transaction.
func (b *nftBackend) setupPortTables(network string, tables []nftPortTable) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	nft, err := b.knft()
	if err != nil {
		return errorf("%w", err)
	}
	tx := nft.NewTransaction()
	var names []string
	for _, t := range tables {
		nftPortSetup(tx, t, network)
		names = append(names, t.String())
	}
	if err := nft.Run(ctx, tx); err != nil {
		if t := tables[0]; t.family != knftables.InetFamily && strings.Contains(err.Error(), "not supported") {
			return errorf("nftables: create table %s: the kernel has no nf_tables %s family (module nf_tables_%s?): %w", t, t.family, t.family, err)
		}
		return errorf("nftables: create table %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

func (b *nftBackend) EnsurePort(p PortRules) error {
	if err := p.validate(); err != nil {
		return err
	}
	return b.syncPort(p.Network, p.Port, &p)
}

func (b *nftBackend) RemovePort(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	return b.syncPort(network, port, nil)
}

// existingPortTables returns the port tables of network that exist.
func existingPortTables(network string) ([]nftPortTable, error) {
	conn, err := gnftables.New(gnftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer conn.CloseLasting()
	existing, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []nftPortTable
	for _, t := range nftPortTables(network) {
		if slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name }) {
			out = append(out, t)
		}
	}
	return out, nil
}

// listPorts returns, for List, a line per guarded port of table t:
// `bridge brouter-lab port "vif1.0": 52:54:00:00:00:01 10.0.0.2 fd00::2`.
func listPorts(t nftPortTable) ([]string, error) {
	conn, err := gnftables.New(gnftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer conn.CloseLasting()
	table := &gnftables.Table{Family: t.nl, Name: t.name}
	byPort := map[string][]string{}
	var ports []string
	for _, s := range t.sets {
		elems, err := conn.GetSetElements(&gnftables.Set{Table: table, Name: s})
		if err != nil {
			return nil, fmt.Errorf("list set %s %s: %w", t, s, err)
		}
		for _, e := range elems {
			d := describeKey(s, e.Key)
			port, rest, _ := strings.Cut(d, " . ")
			if s == setPorts {
				ports = append(ports, port)
			} else {
				byPort[port] = append(byPort[port], rest)
			}
		}
	}
	slices.Sort(ports)
	var out []string
	for _, p := range ports {
		out = append(out, fmt.Sprintf("%s port %s: %s", t, p, strings.Join(byPort[p], " ")))
	}
	return out, nil
}
