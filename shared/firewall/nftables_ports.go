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
//	as_nd6    iifname . @th,64,128 the same, as neighbour discovery targets (not in arp)
//	as_svc    ifname               ports with the service guard only (not in arp)
//
// Ensure creates the network's kind of table (bridged or routed); a table is
// otherwise created (with its rules) the first time a port needs it, and stays
// until the network is removed, so that guarding a port is only ever a change
// of set elements.
//
// Set elements are read and written over netlink (github.com/google/nftables)
// rather than through the nft tool: `nft -f` loads every element of a set to
// delete one, so its cost grows with the number of guests, while a netlink
// batch costs about the same at 10 and at 1000 ports. The batch that changes a
// port's elements (only those that differ) is one nf_tables transaction:
// packets see the old entries or the new ones. Tables, chains and rules (rare)
// go through knftables as text.
//
// Finding a port's current elements means reading (dumping) the four sets,
// whose size grows with the guests. The backend's own record of what it installed
// (installed.go; "prev" below) avoids that: the difference
// prev → p is sent as is, deletes of prev-only elements and adds of p-only
// ones, and only listing the tables (a handful) is read. The kernel checks
// the hint as it applies the batch: deleting an element that is not there, or
// touching a set or table that is not, fails the whole batch, which then
// changed nothing; the sets are read and the port synced from them. A hint
// that is wrong only about elements the batch does not touch goes unnoticed:
// prev equal to p (nothing sent), or the kernel holding elements of the port
// that prev does not name (adds carry no NLM_F_EXCL, which google/nftables
// does not send, so they succeed over an existing element). Such elements
// stay until an operation without a record (after a crash, or a network
// whose tables an older version made) reads the sets.

const (
	setPorts = "as_ports"
	setMAC   = "as_mac"
	setIP4   = "as_ip4"
	setIP6   = "as_ip6"
	setND    = "as_nd6" // as_ip6's elements, keyed for matching a neighbour discovery target
	setSvc   = "as_svc" // ports with the service guard only (ServiceOnly)
)

var nftSetTypes = map[string]string{
	setPorts: "ifname",
	setMAC:   "ifname . ether_addr",
	setIP4:   "ifname . ipv4_addr",
	setIP6:   "ifname . ipv6_addr",
	setSvc:   "ifname",
}

// nftSetTypeOf are the sets declared by an expression (typeof) instead:
// a raw payload's key is an integer, which no named type is.
var nftSetTypeOf = map[string]string{setND: "iifname . " + nftNDTarget}

// nftPortTable is one of the tables holding a network's guarded ports.
type nftPortTable struct {
	family  knftables.Family
	nl      gnftables.TableFamily
	name    string
	bridged bool     // holds bridged ports (else routed ports)
	sets    []string // as_ports first
}

func nftPortTables(network string) []nftPortTable {
	all := []string{setPorts, setMAC, setIP4, setIP6, setND, setSvc}
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

// chains returns the table's chains: the base chain jumps to the guard
// (guard.go) only for ports in as_ports, so frames from other ports cost one
// set lookup.
func (t nftPortTable) chains() []nftChain {
	kind, base := nftBridged, nftChain{name: "prerouting", hook: knftables.PreroutingHook, priority: knftables.FilterPriority}
	switch {
	case t.family == knftables.ARPFamily:
		kind, base = nftARP, nftChain{name: "input", hook: knftables.InputHook, priority: knftables.FilterPriority}
	case !t.bridged: // inet, routed ports: before conntrack, so spoofed packets leave no entry
		kind, base = nftRouted, nftChain{name: "prerouting", hook: knftables.PreroutingHook, priority: knftables.RawPriority}
	}
	guard := nftGuardChains(kind)
	base.rules = []string{"iifname @" + setPorts + " jump " + guard[0].name}
	if kind != nftARP {
		base.rules = append(base.rules, "iifname @"+setSvc+" jump "+nftServiceChain)
	}
	return append([]nftChain{base}, guard...)
}

// nftPortSetup adds to tx what creates table t, or brings an existing one
// back to the current rules, without touching its set elements: add (create
// if missing) the table, sets and chains, then flush the chains and add their
// rules. Applied atomically, so concurrent setups converge on one copy of each rule.
func nftPortSetup(tx *knftables.Transaction, t nftPortTable, network string) {
	tx.Add(&knftables.Table{Family: t.family, Name: t.name,
		Comment: knftables.PtrTo("brouter network " + network + ": per-port antispoof")})
	for _, s := range t.sets {
		tx.Add(&knftables.Set{Family: t.family, Table: t.name, Name: s, Type: nftSetTypes[s], TypeOf: nftSetTypeOf[s]})
	}
	nftSetChains(tx, t.family, t.name, t.chains())
}

// nftSetChains adds to tx what makes the table's chains exactly these
// (created if missing, flushed, filled), leaving its sets alone.
func nftSetChains(tx *knftables.Transaction, family knftables.Family, table string, chains []nftChain) {
	for _, c := range chains {
		ch := &knftables.Chain{Family: family, Table: table, Name: c.name}
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
			tx.Add(&knftables.Rule{Family: family, Table: table, Chain: c.name, Rule: r})
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
	if p.ServiceOnly {
		if !slices.Contains(t.sets, setSvc) {
			return nil
		}
		return map[string][][]byte{setSvc: {keyIfname(p.Port)}}
	}
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
			out[setND] = append(out[setND], keyAddr(p.Port, a))
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
	case (set == setIP4 && len(rest) == 4) || ((set == setIP6 || set == setND) && len(rest) == 16):
		a, _ := netip.AddrFromSlice(rest)
		s += " . " + a.String()
	}
	return s
}

// installed reports whether a PortRules hint says the port has entries.
func (p *PortRules) installed() bool { return len(p.MAC) > 0 || len(p.IPs) > 0 || p.ServiceOnly }

// portHint returns prev if it can serve as the record of what is installed
// for network's port, else nil (unknown: read the kernel). Its Network and
// Port, when set, must be those of the call; a record with entries must have
// a MAC and valid addresses (a record we could not have written is not one).
func portHint(network, port string, prev *PortRules) *PortRules {
	if prev == nil || (prev.Network != "" && prev.Network != network) || (prev.Port != "" && prev.Port != port) {
		return nil
	}
	if !prev.installed() {
		return prev
	}
	h := prev.clone()
	h.Network, h.Port = network, port
	if h.validate() != nil {
		return nil
	}
	return &h
}

// syncPort makes port's entries in network's port tables be want's (nil:
// none), creating the table that needs it. Tables stay until the network is
// removed: a guarded port is then only ever a change of set elements.
// With a hint (prev), only the difference is sent, without reading any set;
// if the kernel refuses it, the sets are read and the port synced from them.
func (b *nftBackend) syncPort(network, port string, want, prev *PortRules) error {
	conn, err := nlOpen()
	if err != nil {
		return errorf("nftables: port %s: %w", port, err)
	}
	defer nlClose(conn)
	return b.syncPortOn(conn, network, port, want, prev)
}

// syncPortOn is syncPort on an open connection.
func (b *nftBackend) syncPortOn(conn nftPortOp, network, port string, want, prev *PortRules) error {
	var err error
	if prev != nil {
		done, err := b.syncPortHinted(conn, network, port, want, prev)
		if err != nil || done {
			return err
		}
	}
	for attempt := 0; attempt < 3; attempt++ {
		var missing []nftPortTable
		missing, err = planPortSync(conn, network, port, want)
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
		if connBroken(err) {
			break
		}
		// A concurrent change (an element or table that vanished between
		// reading and writing) fails the whole batch, which changed nothing: retry.
	}
	return errorf("nftables: port %s: %w", port, err)
}

// syncPortHinted applies the difference prev → want. It reports false (and
// no error) when the kernel disagrees with prev: the caller then reads it.
func (b *nftBackend) syncPortHinted(conn nftPortOp, network, port string, want, prev *PortRules) (bool, error) {
	fresh := map[string]bool{} // tables created here: they held nothing, whatever prev says
	for attempt := 0; attempt < 2; attempt++ {
		missing, err := planPortHint(conn, network, port, want, prev, fresh)
		if len(missing) > 0 {
			if err := b.setupPortTables(network, missing); err != nil {
				return false, err
			}
			for _, t := range missing {
				fresh[t.String()] = true
			}
			continue
		}
		if err == nil {
			return true, nil
		}
		if connBroken(err) {
			return false, errorf("nftables: port %s: %w", port, err)
		}
		return false, nil
	}
	return false, nil
}

// planPortHint queues on conn, and flushes as one batch, the changes from
// prev's entries (what the caller says is installed) to want's, without
// reading any set: deletes of prev-only keys, adds of want-only keys. A
// table that does not exist holds nothing, whatever prev says. It returns the
// tables that must be created first (then nothing was changed). An error from
// the batch (an element or set that is not there) means prev was wrong.
func planPortHint(conn nftPortOp, network, port string, want, prev *PortRules, fresh map[string]bool) ([]nftPortTable, error) {
	existing, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	exists := func(t nftPortTable) bool {
		return slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name })
	}
	var missing []nftPortTable
	var changes []setChange
	for _, t := range nftPortTables(network) {
		here := want != nil && want.Bridged == t.bridged
		was := prev.installed() && prev.Bridged == t.bridged && !fresh[t.String()]
		if !exists(t) {
			if here {
				missing = append(missing, t)
			}
			continue
		}
		var old, add map[string][][]byte
		if was {
			old = t.portElements(*prev)
		}
		if here {
			add = t.portElements(*want)
		}
		table := &gnftables.Table{Family: t.nl, Name: t.name}
		for _, s := range t.sets {
			changes = append(changes, keyChanges(&gnftables.Set{Table: table, Name: s}, old[s], add[s])...)
		}
	}
	return applyUnlessMissing(conn, missing, changes)
}

// planPortSync queues on conn, and flushes as one batch, the changes that make
// port's entries be want's, reading the sets to find the port's entries. It
// returns the tables that must be created first (then nothing was changed).
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
	var changes []setChange
	for _, t := range nftPortTables(network) {
		here := want != nil && want.Bridged == t.bridged
		if !exists(t) {
			if here {
				missing = append(missing, t)
			}
			continue
		}
		table := &gnftables.Table{Family: t.nl, Name: t.name}
		old := map[string][][]byte{}
		setMissing := false
		for _, s := range t.sets {
			elems, err := dumpSet(conn, &gnftables.Set{Table: table, Name: s})
			if errors.Is(err, syscall.ENOENT) {
				setMissing = true
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("list set %s %s: %w", t, s, err)
			}
			for _, e := range elems {
				if bytes.HasPrefix(e.Key, prefix) {
					old[s] = append(old[s], e.Key)
				}
			}
		}
		if setMissing && here {
			missing = append(missing, t) // table without the set: set it up again
			continue
		}
		var add map[string][][]byte
		if here {
			add = t.portElements(*want)
		}
		for _, s := range t.sets {
			if len(old[s]) > 0 || len(add[s]) > 0 {
				changes = append(changes, keyChanges(&gnftables.Set{Table: table, Name: s}, old[s], add[s])...)
			}
		}
	}
	return applyUnlessMissing(conn, missing, changes)
}

// setupPortTables creates the tables that are missing, in one transaction.
//
// Ports of a network attach at once, and would each create the tables they
// find missing (an nft run and a commit apiece): the creation is serialised
// by a lock of the backend's (iptables_records.go), under which the tables
// another port created meanwhile are left alone.
func (b *nftBackend) setupPortTables(network string, tables []nftPortTable) error {
	if err := b.noteTables(network); err != nil {
		return err
	}
	if b.createPortTables != nil {
		return b.createPortTables(network, tables)
	}
	return locked(b.rec, "nftables-"+network+".setup", false, func() error {
		missing, err := missingTables(tables)
		if err != nil || len(missing) == 0 {
			return err
		}
		return b.createTables(network, missing)
	})
}

// missingTables are those of tables the kernel does not have.
func missingTables(tables []nftPortTable) ([]nftPortTable, error) {
	conn, err := nlOpen()
	if err != nil {
		return nil, errorf("nftables: %w", err)
	}
	defer nlClose(conn)
	existing, err := conn.ListTables()
	if err != nil {
		return nil, errorf("nftables: list tables: %w", err)
	}
	return slices.DeleteFunc(slices.Clone(tables), func(t nftPortTable) bool {
		return slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name })
	}), nil
}

// createTables creates the port tables in one nft transaction.
func (b *nftBackend) createTables(network string, tables []nftPortTable) error {
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

// EnsurePort makes the port's antispoof entries p's. What is installed
// comes from the backend's records (installed.go): with them, only the
// difference is sent and no set is read.
func (b *nftBackend) EnsurePort(p PortRules) error {
	if err := p.validate(); err != nil {
		return err
	}
	prev := b.guardInstalled(p.Network, p.Port)
	if err := b.changing(recGuard(p.Network, p.Port), guardRec{}); err != nil {
		return err
	}
	if err := b.syncPort(p.Network, p.Port, &p, prev); err != nil {
		return err
	}
	return b.installedGuard(p.Network, p.Port, &p)
}

func (b *nftBackend) RemovePort(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	prev := b.guardInstalled(network, port)
	if prev != nil && !prev.installed() {
		// Nothing installed: nothing to do, not even a netlink socket. (The
		// temp file of a record write that was killed may be left: remove it.)
		return b.forget(recGuard(network, port))
	}
	if err := b.changing(recGuard(network, port), guardRec{}); err != nil {
		return err
	}
	if err := b.syncPort(network, port, nil, prev); err != nil {
		return err
	}
	return b.installedGuard(network, port, nil)
}

// nftTables is what exists of a network's tables besides "inet brouter-NET".
type nftTables struct {
	ports   []nftPortTable // port tables that exist
	fwd     *gnftables.Table
	overlay bool // the overlay table exists (overlay.go)
}

// existingTables lists the port tables and the published-ports table of network that exist.
func existingTables(conn nftPortOp, network string) (nftTables, error) {
	var out nftTables
	existing, err := conn.ListTables()
	if err != nil {
		return out, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range nftPortTables(network) {
		if slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name }) {
			out.ports = append(out.ports, t)
		}
	}
	out.fwd = findFwdTable(existing, network)
	out.overlay = nftOverlayExists(existing, network)
	return out, nil
}

// listPorts returns, for List, a line per guarded port of table t:
// `bridge brouter-lab port "vif1.0": 52:54:00:00:00:01 10.0.0.2 fd00::2`.
func listPorts(conn nftPortOp, t nftPortTable) ([]string, error) {
	table := &gnftables.Table{Family: t.nl, Name: t.name}
	byPort := map[string][]string{}
	var ports []string
	for _, s := range t.sets {
		elems, err := dumpSet(conn, &gnftables.Set{Table: table, Name: s})
		if err != nil {
			return nil, fmt.Errorf("list set %s %s: %w", t, s, err)
		}
		for _, e := range elems {
			d := describeKey(s, e.Key)
			port, rest, _ := strings.Cut(d, " . ")
			switch s {
			case setPorts:
				ports = append(ports, port)
			case setSvc:
				ports = append(ports, port)
				byPort[port] = append(byPort[port], "(service guard only)")
			case setND: // as_ip6 again
			default:
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
