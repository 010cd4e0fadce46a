package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	gnftables "github.com/google/nftables"
	"sigs.k8s.io/knftables"
)

// Published ports (DNAT) in nftables.
//
// A network's published ports live in a table of their own, never in the
// network's "inet brouter-NET" (which Ensure replaces wholesale):
//
//	table inet brouter-NET.fwd
//	  map fwd4     ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
//	  map fwd4any  inet_proto . inet_service : ipv4_addr . inet_service
//	  map fwd6     ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
//	  map fwd6any  inet_proto . inet_service : ipv6_addr . inet_service
//	  map own4, own4any, own6, own6any  the same keys : ifname (the owning guest port)
//	  chain prerouting   nat, hook prerouting, priority dstnat: fib daddr type local jump published
//	  chain output       nat, hook output, priority -100: the same, for the host's own connections
//	  chain published    dnat through the maps, specific host address first
//	  chain postrouting  nat, hook postrouting, priority srcnat: masquerade DNATed
//	                     connections leaving through the bridge from the bridge's
//	                     subnets (hairpin: a guest reaching a published port) or
//	                     from 127.0.0.0/8 (the host connecting to localhost)
//	  counter PORT       one per guest port with published ports (see below)
//
// A published port is one element of a fwd map, whose comment is the owning
// guest port's name, and one element of the matching own map; the number of
// rules never grows with guests or ports. Elements are read and written over
// netlink (github.com/google/nftables); tables, chains and rules go through
// knftables as text. The table is created with the network's first published
// port and deleted with its last.
//
// Ownership. A (protocol, host address, host port) belongs to one guest port
// of the network. The kernel refuses to add an element whose key exists with
// another value, even without NLM_F_EXCL (which google/nftables does not
// send), and accepts it as a no-op with the same value: adding key → PORT to
// an own map therefore fails, in the same batch as the fwd element and so
// changing nothing, exactly when another port owns the key. (The fwd map
// alone cannot tell: two ports may publish the same key toward the same
// guest, a stale one and its successor.) The maps are then read to name the
// owner in the error.
//
// The last published port. Knowing that the table can go would mean reading
// the maps. Instead each guest port with published ports has a named counter
// (never incremented) in the table: the table's use count, which listing the
// tables returns, is its chains and maps plus one per such port, so "only
// this port left" is read without touching an element.
//
// The record of what is installed (prev, installed.go) is checked by the batch itself: deleting an element, or the
// port's counter, that is not there fails, and so does adding a key that is
// there with another value; the port's entries are then read from the maps
// and the change made from them. Adds cost little; a batch that deletes makes
// the connection's close wait for nf_tables' destroy work (see nlOpen).

func nftFwdTableName(network string) string { return nftTableName(network) + ".fwd" }

var nftFwdMapTypes = map[string]string{
	fwdMap4:    "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
	fwdMap4Any: "inet_proto . inet_service : ipv4_addr . inet_service",
	fwdMap6:    "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
	fwdMap6Any: "inet_proto . inet_service : ipv6_addr . inet_service",
}

// ownerMap is the map that tells which guest port owns a key of the fwd map set.
func ownerMap(set string) string { return "own" + strings.TrimPrefix(set, "fwd") }

// nftFwdMaps are all the maps of the table: the fwd maps, then the own maps.
var nftFwdMaps = append(slices.Clone(fwdMaps), ownerMap(fwdMap4), ownerMap(fwdMap4Any), ownerMap(fwdMap6), ownerMap(fwdMap6Any))

func nftFwdMapType(m string) string {
	if t, ok := nftFwdMapTypes[m]; ok {
		return t
	}
	key, _, _ := strings.Cut(nftFwdMapTypes["fwd"+strings.TrimPrefix(m, "own")], " : ")
	return key + " : ifname"
}

const fwdChainPublished = "published"

// nftFwdBase is the table's use count without any port's counter: its 4
// chains and 8 maps. (Its rules use no anonymous set: one rule per prefix.)
const nftFwdBase = 12

// nftFwdChains returns the table's chains and their rules.
func nftFwdChains(bridge string, subnets []netip.Prefix) []struct {
	c     knftables.Chain
	rules []string
} {
	base := func(name string, hook knftables.BaseChainHook, prio knftables.BaseChainPriority) knftables.Chain {
		return knftables.Chain{Name: name, Type: knftables.PtrTo(knftables.NATType), Hook: knftables.PtrTo(hook), Priority: knftables.PtrTo(prio)}
	}
	jump := "fib daddr type local jump " + fwdChainPublished
	var masq []string
	for _, r := range hairpinPlan(bridge, subnets) {
		masq = append(masq, nftRule(r))
	}
	return []struct {
		c     knftables.Chain
		rules []string
	}{
		{base("prerouting", knftables.PreroutingHook, knftables.DNATPriority), []string{jump}},
		// "dstnat" names -100 in prerouting only.
		{base("output", knftables.OutputHook, "-100"), []string{jump}},
		{knftables.Chain{Name: fwdChainPublished}, []string{
			"dnat ip to ip daddr . meta l4proto . th dport map @" + fwdMap4,
			"dnat ip to meta l4proto . th dport map @" + fwdMap4Any,
			"dnat ip6 to ip6 daddr . meta l4proto . th dport map @" + fwdMap6,
			"dnat ip6 to meta l4proto . th dport map @" + fwdMap6Any,
		}},
		{base("postrouting", knftables.PostroutingHook, knftables.SNATPriority), masq},
	}
}

// nftFwdSetup adds to tx what creates the table, or brings an existing one
// back to the current rules for bridge and subnets, without touching its
// elements and counters (as nftPortSetup does).
func nftFwdSetup(tx *knftables.Transaction, network, bridge string, subnets []netip.Prefix) {
	fam, name := knftables.InetFamily, nftFwdTableName(network)
	tx.Add(&knftables.Table{Family: fam, Name: name, Comment: knftables.PtrTo("brouter network " + network + ": published ports")})
	for _, m := range nftFwdMaps {
		tx.Add(&knftables.Map{Family: fam, Table: name, Name: m, Type: nftFwdMapType(m)})
	}
	chains := nftFwdChains(bridge, subnets)
	for _, c := range chains {
		ch := c.c
		ch.Family, ch.Table = fam, name
		tx.Add(&ch)
		tx.Flush(&ch)
	}
	for _, c := range chains {
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Family: fam, Table: name, Chain: c.c.Name, Rule: r})
		}
	}
}

func (b *nftBackend) setupFwdTable(network, bridge string, subnets []netip.Prefix) error {
	if err := b.noteTables(network); err != nil {
		return err
	}
	if b.createFwdTable != nil {
		return b.createFwdTable(network, bridge, subnets)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	nft, err := b.knft()
	if err != nil {
		return errorf("%w", err)
	}
	tx := nft.NewTransaction()
	nftFwdSetup(tx, network, bridge, subnets)
	if err := nft.Run(ctx, tx); err != nil {
		return errorf("nftables: create table inet %s: %w", nftFwdTableName(network), err)
	}
	return nil
}

func findFwdTable(tables []*gnftables.Table, network string) *gnftables.Table {
	name := nftFwdTableName(network)
	for _, t := range tables {
		if t.Family == gnftables.TableFamilyINet && t.Name == name {
			return t
		}
	}
	return nil
}

// tableUse is a table's use count (its chains, sets and objects) as listing
// the tables reports it. google/nftables v0.3.0 decodes NFTA_TABLE_USE in
// host byte order while the kernel sends network byte order; a real count is
// far below 1<<16, so a larger value is one read the wrong way round.
func tableUse(t *gnftables.Table) uint32 {
	if t.Use > 0xffff {
		return bits.ReverseBytes32(t.Use)
	}
	return t.Use
}

// nftFwdOp is what the published-ports code needs from netlink (a *gnftables.Conn; tests may fake it).
type nftFwdOp interface {
	nftPortOp
	AddObj(o gnftables.Obj) gnftables.Obj
	DeleteObject(o gnftables.Obj)
	DelTable(t *gnftables.Table)
}

// fwdEntry is one published port as the maps hold it: its fwd map, key and
// value, and its owner (the own map's value; the element's comment).
type fwdEntry struct {
	set      string // fwd map
	key, val []byte
	owner    string
}

func (e fwdEntry) id() string { return e.set + "/" + string(e.key) }

// fwdEntries returns the elements of port's forwards, by id.
func fwdEntries(port string, l []Forward) map[string]fwdEntry {
	out := map[string]fwdEntry{}
	for _, fw := range l {
		set, key, val := fw.element()
		e := fwdEntry{set: set, key: key, val: val, owner: port}
		out[e.id()] = e
	}
	return out
}

func sortedEntries(m map[string]fwdEntry) []fwdEntry {
	var out []fwdEntry
	for _, id := range sortedKeys(m) {
		out = append(out, m[id])
	}
	return out
}

// fwdBatch is the changes of one port's elements, in four phases queued in
// order: fwd deletes, own deletes, own adds, fwd adds.
type fwdBatch struct {
	table  *gnftables.Table
	port   string
	phases [4][]setChange
}

const (
	delFwd = iota
	delOwn
	addOwn
	addFwd
)

func (fb *fwdBatch) add(phase int, set string, e gnftables.SetElement) {
	l := fb.phases[phase]
	if n := len(l); n > 0 && l[n-1].set.Name == set {
		l[n-1].elems = append(l[n-1].elems, e)
		return
	}
	fb.phases[phase] = append(l, setChange{set: &gnftables.Set{Table: fb.table, Name: set}, del: phase <= delOwn, elems: []gnftables.SetElement{e}})
}

func (fb *fwdBatch) delFwd(e fwdEntry) { fb.add(delFwd, e.set, gnftables.SetElement{Key: e.key}) }
func (fb *fwdBatch) delOwn(e fwdEntry) {
	fb.add(delOwn, ownerMap(e.set), gnftables.SetElement{Key: e.key})
}
func (fb *fwdBatch) addOwn(e fwdEntry) {
	fb.add(addOwn, ownerMap(e.set), gnftables.SetElement{Key: e.key, Val: keyIfname(fb.port)})
}
func (fb *fwdBatch) addFwd(e fwdEntry) {
	fb.add(addFwd, e.set, gnftables.SetElement{Key: e.key, Val: e.val, Comment: fb.port})
}

func (fb *fwdBatch) changes() []setChange {
	return slices.Concat(fb.phases[0], fb.phases[1], fb.phases[2], fb.phases[3])
}

// elements queues the changes from the port's published ports old to want
// (both as this port's entries, by id).
func (fb *fwdBatch) elements(old, want map[string]fwdEntry) {
	for _, e := range sortedEntries(old) {
		w, ok := want[e.id()]
		if !ok {
			fb.delFwd(e)
			fb.delOwn(e)
		} else if !bytes.Equal(w.val, e.val) {
			fb.delFwd(e) // the key stays the port's; its target changes
		}
	}
	for _, e := range sortedEntries(want) {
		o, ok := old[e.id()]
		if !ok {
			fb.addOwn(e) // fails if another port owns the key
		}
		if !ok || !bytes.Equal(o.val, e.val) {
			fb.addFwd(e)
		}
	}
}

func (fb *fwdBatch) marker() *gnftables.CounterObj {
	return &gnftables.CounterObj{Table: fb.table, Name: fb.port}
}

// syncForwards makes port f.Port's elements be f.Forwards's (none: remove).
func (b *nftBackend) syncForwards(f Forwards, prev *Forwards) error {
	conn, err := nlOpen()
	if err != nil {
		return errorf("nftables: port %s: %w", f.Port, err)
	}
	defer nlClose(conn)
	return b.syncForwardsOn(conn, f, prev)
}

// syncForwardsOn is syncForwards on an open connection.
func (b *nftBackend) syncForwardsOn(conn nftFwdOp, f Forwards, prev *Forwards) error {
	var err error
	if prev != nil {
		done, err := b.forwardsHinted(conn, f, prev.Forwards)
		if err != nil || done {
			return err
		}
	}
	for attempt := 0; attempt < 3; attempt++ {
		if err = b.forwardsSync(conn, f); err == nil {
			return nil
		}
		if errors.Is(err, ErrAlreadyPublished) {
			return err
		}
		if connBroken(err) {
			break
		}
		// A concurrent change between reading and writing failed the batch, which changed nothing: retry.
	}
	if strings.HasPrefix(err.Error(), "firewall: ") {
		return err
	}
	return errorf("nftables: port %s: %w", f.Port, err)
}

// forwardsHinted applies the difference prev → f without reading any map.
// It reports false (and no error) when the kernel disagrees with prev.
func (b *nftBackend) forwardsHinted(conn nftFwdOp, f Forwards, prev []Forward) (bool, error) {
	tables, err := conn.ListTables()
	if err != nil {
		return false, errorf("nftables: port %s: list tables: %w", f.Port, err)
	}
	t := findFwdTable(tables, f.Network)
	use := uint32(nftFwdBase)
	if t == nil {
		if len(f.Forwards) == 0 {
			return true, nil // no table, so nothing of the port's: done
		}
		if err := b.setupFwdTable(f.Network, f.Bridge, f.Subnets); err != nil {
			return false, err
		}
		prev = nil // a table that did not exist held nothing
	} else {
		use = tableUse(t)
	}
	fb := &fwdBatch{table: &gnftables.Table{Family: gnftables.TableFamilyINet, Name: nftFwdTableName(f.Network)}, port: f.Port}
	old, want := fwdEntries(f.Port, prev), fwdEntries(f.Port, f.Forwards)
	fb.elements(old, want)
	if err := queue(conn, fb.changes()); err != nil {
		return false, errorf("nftables: port %s: %w", f.Port, err)
	}
	switch {
	case len(old) == 0 && len(want) > 0:
		conn.AddObj(fb.marker())
	case len(old) > 0 && len(want) == 0:
		conn.DeleteObject(fb.marker()) // not there: prev was wrong
		if use == nftFwdBase+1 {       // this port's counter was the last one
			conn.DelTable(fb.table)
		}
	}
	// One batch: the port's elements, its counter and the table change at once.
	if err := conn.Flush(); err != nil {
		return false, b.hintFailed(f.Port, err)
	}
	return true, nil
}

func (b *nftBackend) hintFailed(port string, err error) error {
	if connBroken(err) {
		return errorf("nftables: port %s: %w", port, err)
	}
	return nil // the kernel disagrees with the hint: read it
}

// forwardsSync reads the maps and makes port f.Port's elements be f.Forwards's.
func (b *nftBackend) forwardsSync(conn nftFwdOp, f Forwards) error {
	tables, err := conn.ListTables()
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	if findFwdTable(tables, f.Network) == nil {
		if len(f.Forwards) == 0 {
			return nil
		}
		if err := b.setupFwdTable(f.Network, f.Bridge, f.Subnets); err != nil {
			return err
		}
	}
	table := &gnftables.Table{Family: gnftables.TableFamilyINet, Name: nftFwdTableName(f.Network)}
	st, err := readForwards(conn, table)
	if err != nil {
		return err
	}
	if st.missing && len(f.Forwards) > 0 {
		// A table without all its maps (someone deleted one): set it up again.
		if err := b.setupFwdTable(f.Network, f.Bridge, f.Subnets); err != nil {
			return err
		}
	}
	want := fwdEntries(f.Port, f.Forwards)
	for _, fw := range f.Forwards {
		set, key, _ := fw.element()
		if owner, ok := st.ownerOf(set + "/" + string(key)); ok && owner != f.Port {
			return conflict(f.Port, fw, owner)
		}
	}
	fb := &fwdBatch{table: table, port: f.Port}
	for _, id := range sortedKeys(st.fwd) {
		e := st.fwd[id]
		if owner, _ := st.ownerOf(id); owner == f.Port {
			if w, ok := want[id]; !ok || !bytes.Equal(w.val, e.val) {
				fb.delFwd(e)
			}
		}
	}
	for _, id := range sortedKeys(st.own) {
		if e := st.own[id]; e.owner == f.Port && want[id].set == "" {
			fb.delOwn(e)
		}
	}
	for _, e := range sortedEntries(want) {
		if st.own[e.id()].owner != f.Port {
			fb.addOwn(e)
		}
		if have, ok := st.fwd[e.id()]; !ok || !bytes.Equal(have.val, e.val) {
			fb.addFwd(e)
		}
	}
	foreign := false
	for _, m := range []map[string]fwdEntry{st.fwd, st.own} {
		for id := range m {
			if owner, _ := st.ownerOf(id); owner != f.Port {
				foreign = true
			}
		}
	}
	if len(want) == 0 && !foreign {
		// The network's last published port: the table goes, with everything in it.
		conn.DelTable(table)
		return conn.Flush()
	}
	if err := queue(conn, fb.changes()); err != nil {
		return err
	}
	if len(want) == 0 {
		// Make sure the counter goes, whether or not it is there.
		conn.AddObj(fb.marker())
		conn.DeleteObject(fb.marker())
	} else {
		conn.AddObj(fb.marker()) // there already: a no-op
	}
	return conn.Flush()
}

// fwdState is what the maps of a published-ports table hold.
type fwdState struct {
	fwd     map[string]fwdEntry // by id: the fwd maps' elements (owner: their comment)
	own     map[string]fwdEntry // by id (of the fwd map): the own maps' elements (owner: their value)
	missing bool                // a map is not there
}

// ownerOf returns the port that owns id: the own map's, else the fwd element's comment.
func (st fwdState) ownerOf(id string) (string, bool) {
	if e, ok := st.own[id]; ok {
		return e.owner, true
	}
	e, ok := st.fwd[id]
	return e.owner, ok
}

// readForwards dumps the maps of the table.
func readForwards(conn nftPortOp, table *gnftables.Table) (fwdState, error) {
	st := fwdState{fwd: map[string]fwdEntry{}, own: map[string]fwdEntry{}}
	for _, m := range nftFwdMaps {
		elems, err := dumpSet(conn, &gnftables.Set{Table: table, Name: m, IsMap: true})
		if errors.Is(err, syscall.ENOENT) {
			st.missing = true // not set up: nothing there
			continue
		}
		if err != nil {
			return st, fmt.Errorf("list map inet %s %s: %w", table.Name, m, err)
		}
		for _, e := range elems {
			if fwdm, ok := strings.CutPrefix(m, "own"); ok {
				owner, _, _ := bytes.Cut(e.Val, []byte{0})
				fe := fwdEntry{set: "fwd" + fwdm, key: e.Key, owner: string(owner)}
				st.own[fe.id()] = fe
			} else {
				fe := fwdEntry{set: m, key: e.Key, val: e.Val, owner: e.Comment}
				st.fwd[fe.id()] = fe
			}
		}
	}
	return st, nil
}

// EnsureForwards makes the port's published ports f's. What is installed
// comes from the backend's records (installed.go): with them, only the
// difference is sent and no map is read.
func (b *nftBackend) EnsureForwards(f Forwards) error {
	if err := f.validate(); err != nil {
		return err
	}
	prev := b.fwdInstalled(f.Network, f.Port)
	if prev != nil && len(prev.Forwards) == 0 && len(f.Forwards) == 0 {
		return nil
	}
	if err := b.changing(recFwd(f.Network, f.Port), fwdRec{}); err != nil {
		return err
	}
	if err := b.syncForwards(f, prev); err != nil {
		if errors.Is(err, ErrAlreadyPublished) {
			// Nothing changed: what was installed still is.
			if prev != nil {
				_ = b.installedForwards(f.Network, f.Port, prev.Forwards)
			}
		}
		return err
	}
	return b.installedForwards(f.Network, f.Port, f.Forwards)
}

func (b *nftBackend) RemoveForwards(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	prev := b.fwdInstalled(network, port)
	if prev != nil && len(prev.Forwards) == 0 {
		// Nothing installed: nothing to do, not even a netlink socket. (The
		// temp file of a record write that was killed may be left: remove it.)
		return b.forget(recFwd(network, port))
	}
	if err := b.changing(recFwd(network, port), fwdRec{}); err != nil {
		return err
	}
	if err := b.syncForwards(Forwards{Network: network, Port: port}, prev); err != nil {
		return err
	}
	return b.installedForwards(network, port, nil)
}

// listForwards returns, for List, a line per published port of the table.
func listForwards(conn nftPortOp, network string) ([]string, error) {
	st, err := readForwards(conn, &gnftables.Table{Family: gnftables.TableFamilyINet, Name: nftFwdTableName(network)})
	if err != nil {
		return nil, err
	}
	byPort := map[string][]Forward{}
	for id, e := range st.fwd {
		fw, err := forwardFromElement(e.set, e.key, e.val)
		if err != nil {
			return nil, fmt.Errorf("table inet %s: %w", nftFwdTableName(network), err)
		}
		owner, _ := st.ownerOf(id)
		byPort[owner] = append(byPort[owner], fw)
	}
	var out []string
	for _, port := range sortedKeys(byPort) {
		sortForwards(byPort[port])
		for _, fw := range byPort[port] {
			out = append(out, ForwardLine(port, fw))
		}
	}
	return out, nil
}

// Map element encoding, for the maps above.
// Each field of a concatenation is padded to a multiple of 4 bytes, in
// network byte order: inet_proto is 1 byte, inet_service 2.

const (
	fwdMap4    = "fwd4"    // ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	fwdMap4Any = "fwd4any" // inet_proto . inet_service : ipv4_addr . inet_service
	fwdMap6    = "fwd6"
	fwdMap6Any = "fwd6any"
)

var fwdMaps = []string{fwdMap4, fwdMap4Any, fwdMap6, fwdMap6Any}

func protoField(p string) []byte { return []byte{fwdProtos[p], 0, 0, 0} }

func portField(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p)[:2:2] }

func padded(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }

// element returns the forward's map and its key and value there.
func (fw Forward) element() (set string, key, val []byte) {
	var proto = protoField(fw.Proto)
	port := padded(portField(fw.HostPort))
	switch {
	case fw.is4() && fw.HostIP.IsValid():
		set, key = fwdMap4, slices.Concat(fw.HostIP.AsSlice(), proto, port)
	case fw.is4():
		set, key = fwdMap4Any, slices.Concat(proto, port)
	case fw.HostIP.IsValid():
		set, key = fwdMap6, slices.Concat(fw.HostIP.AsSlice(), proto, port)
	default:
		set, key = fwdMap6Any, slices.Concat(proto, port)
	}
	return set, key, slices.Concat(fw.GuestIP.AsSlice(), padded(portField(fw.GuestPort)))
}

// forwardFromElement decodes a map element (the inverse of element).
func forwardFromElement(set string, key, val []byte) (Forward, error) {
	var fw Forward
	alen := 4
	if set == fwdMap6 || set == fwdMap6Any {
		alen = 16
	}
	if set == fwdMap4 || set == fwdMap6 {
		if len(key) < alen {
			return fw, fmt.Errorf("map %s: short key %x", set, key)
		}
		fw.HostIP, _ = netip.AddrFromSlice(key[:alen])
		key = key[alen:]
	}
	if len(key) != 8 || len(val) != alen+4 {
		return fw, fmt.Errorf("map %s: unexpected element %x : %x", set, key, val)
	}
	for name, num := range fwdProtos {
		if num == key[0] {
			fw.Proto = name
		}
	}
	if fw.Proto == "" {
		return fw, fmt.Errorf("map %s: unexpected protocol %d", set, key[0])
	}
	fw.HostPort = binary.BigEndian.Uint16(key[4:6])
	fw.GuestIP, _ = netip.AddrFromSlice(val[:alen])
	fw.GuestPort = binary.BigEndian.Uint16(val[alen : alen+2])
	return fw, nil
}
