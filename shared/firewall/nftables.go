package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/knftables"
)

// opTimeout bounds one backend operation, well under Xen's 40 s hotplug timeout.
const opTimeout = 15 * time.Second

// nftBackend keeps each network in its own table, "inet brouter-NET", and
// replaces the whole table in one nft transaction. Guarded guest ports live
// in separate tables (see nftables_ports.go).
//
// Constructing one is cheap (it only finds the nft binary): hotplug hooks
// that only change a port's set elements talk netlink and never pay for
// knftables' probes or the iptables lookups of the Docker compatibility.
type nftBackend struct {
	nftPath string
	rec     Records // what the backend installed per port (installed.go); nil: none kept

	nftOnce sync.Once
	nftIfc  knftables.Interface // no default table: every object names its own
	nftErr  error

	compatOnce sync.Once
	compatFams []*iptFamily // iptables families present on the host, for Docker compatibility

	// Test seams for the creation of port and published-ports tables
	// (nft, through knftables); nil: the real ones.
	createPortTables func(network string, tables []nftPortTable) error
	createFwdTable   func(network, bridge string, subnets []netip.Prefix) error
}

func newNftables(rec Records) (*nftBackend, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftables: nft not found (install the Debian package nftables): %w", err)
	}
	return &nftBackend{nftPath: path, rec: rec}, nil
}

// knft returns the knftables handle, probing nft on first use.
func (b *nftBackend) knft() (knftables.Interface, error) {
	b.nftOnce.Do(func() {
		b.nftIfc, b.nftErr = knftables.New("", "")
		if b.nftErr != nil {
			b.nftErr = fmt.Errorf("nftables: nft is not usable (needs root and a kernel with nf_tables): %w", b.nftErr)
		}
	})
	return b.nftIfc, b.nftErr
}

// compat returns the host's iptables families, looked up on first use.
func (b *nftBackend) compat() []*iptFamily {
	b.compatOnce.Do(func() {
		for _, fam := range []int{4, 6} {
			if f, err := newIPTFamily(fam); err == nil {
				b.compatFams = append(b.compatFams, f)
			}
		}
	})
	return b.compatFams
}

func (b *nftBackend) Name() string { return KindNftables }

func nftTableName(network string) string { return "brouter-" + network }

// listExistingTables is existingTables on a connection of its own.
func listExistingTables(network string) (nftTables, error) {
	conn, err := nlOpen()
	if err != nil {
		return nftTables{}, err
	}
	defer nlClose(conn)
	return existingTables(conn, network)
}

// nftTransaction adds to tx the operations that replace network r's table:
// add (so the delete cannot fail), delete, then add the table and its content.
// nft applies a transaction atomically: packets see the old table or the new one.
func nftTransaction(tx *knftables.Transaction, r NetworkRules) {
	fam, name := knftables.InetFamily, nftTableName(r.Network)
	tx.Add(&knftables.Table{Family: fam, Name: name})
	tx.Delete(&knftables.Table{Family: fam, Name: name})
	tx.Add(&knftables.Table{Family: fam, Name: name, Comment: knftables.PtrTo("brouter network " + r.Network)})

	rules := plan(r)
	// The base chains: forward always, the others when the plan uses them.
	for _, c := range []struct {
		name     string
		typ      knftables.BaseChainType
		hook     knftables.BaseChainHook
		priority knftables.BaseChainPriority
	}{
		{chainForward, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
		{chainPostrouting, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
		{chainInput, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
		{chainPrerouting, knftables.FilterType, knftables.PreroutingHook, knftables.RawPriority},
	} {
		if c.name == chainForward || slices.ContainsFunc(rules, func(rl rule) bool { return rl.chain == c.name }) {
			tx.Add(&knftables.Chain{Family: fam, Table: name, Name: c.name,
				Type: knftables.PtrTo(c.typ), Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(c.priority)})
		}
	}
	// The policy's filters: regular chains, jumped to from the base chains.
	for _, c := range []string{chainOutgoing, chainIncoming} {
		if slices.ContainsFunc(rules, func(rl rule) bool { return rl.chain == c }) {
			tx.Add(&knftables.Chain{Family: fam, Table: name, Name: c})
		}
	}
	for _, rl := range rules {
		tx.Add(&knftables.Rule{Family: fam, Table: name, Chain: rl.chain, Rule: nftRule(rl)})
	}
}

// nftLines is plan rendered as "chain: nft rule" lines, as the fake records them.
func nftLines(r NetworkRules) []string {
	var out []string
	for _, rl := range plan(r) {
		out = append(out, rl.chain+": "+nftRule(rl))
	}
	return out
}

func (b *nftBackend) Ensure(r NetworkRules) error {
	if err := r.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Port tables and the published-ports table, if they exist, get the
	// current rules again in the same transaction (their elements stay), so
	// that an upgrade's rule changes, and a change of the network's bridge or
	// subnets, reach them.
	have, err := listExistingTables(r.Network)
	if err != nil {
		return errorf("nftables: network %s: %w", r.Network, err)
	}
	ports := have.ports
	// The network's own kind of port table is created with the network, so
	// that guarding a guest port is only a change of set elements (netlink,
	// no nft process) even for the first port.
	var created []nftPortTable
	for _, t := range nftPortTables(r.Network) {
		if t.bridged == (r.Bridge != "") && !slices.ContainsFunc(ports, func(p nftPortTable) bool { return p.name == t.name && p.family == t.family }) {
			ports = append(ports, t)
			created = append(created, t)
		}
	}
	nft, err := b.knft()
	if err != nil {
		return errorf("%w", err)
	}
	// Tables that do not exist hold nothing, whatever the port records say
	// (a flushed ruleset): those records go, before the tables are created
	// empty, so that the ports' next EnsurePort (a reconcile) adds everything.
	if err := b.forgetVanished(r.Network, created, have.fwd == nil); err != nil {
		return err
	}
	if len(have.ports) == 0 && have.fwd == nil {
		// The network's port tables are created now: its records are complete.
		if err := b.noteTables(r.Network); err != nil {
			return err
		}
	}
	tx := nft.NewTransaction()
	nftTransaction(tx, r)
	for _, t := range ports {
		nftPortSetup(tx, t, r.Network)
	}
	if have.fwd != nil {
		nftFwdSetup(tx, r.Network, r.Bridge, r.Subnets)
	}
	if r.Overlay != nil {
		nftOverlaySetup(tx, r.Network, r.Overlay)
	} else if have.overlay {
		tx.Delete(&knftables.Table{Family: knftables.BridgeFamily, Name: nftOverlayTableName(r.Network)})
	}
	if err := nft.Run(ctx, tx); err != nil {
		return errorf("nftables: install table inet %s: %w", nftTableName(r.Network), err)
	}
	if err := syncDockerCompat(b.compat(), r); err != nil {
		return errorf("nftables: network %s: %w", r.Network, err)
	}
	return nil
}

func (b *nftBackend) Remove(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	fam, name := knftables.InetFamily, nftTableName(network)
	have, err := listExistingTables(network)
	if err != nil {
		return errorf("nftables: network %s: %w", network, err)
	}
	nft, err := b.knft()
	if err != nil {
		return errorf("%w", err)
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Family: fam, Name: name}) // so that the delete cannot fail
	tx.Delete(&knftables.Table{Family: fam, Name: name})
	for _, t := range have.ports { // with their guarded ports
		tx.Delete(&knftables.Table{Family: t.family, Name: t.name})
	}
	if have.fwd != nil { // and the published ports
		tx.Delete(&knftables.Table{Family: fam, Name: nftFwdTableName(network)})
	}
	if have.overlay { // and the tunnel's filter
		tx.Delete(&knftables.Table{Family: knftables.BridgeFamily, Name: nftOverlayTableName(network)})
	}
	if err := nft.Run(ctx, tx); err != nil {
		return errorf("nftables: delete table inet %s: %w", name, err)
	}
	if err := b.forgetNetwork(network); err != nil {
		return err
	}
	for _, f := range b.compat() {
		if err := f.removeChains(network); err != nil {
			return errorf("nftables: network %s: %w", network, err)
		}
	}
	return nil
}

// List returns the table's rules as "chain: rule" lines (as nft prints them),
// followed by the Docker-compatibility iptables rules, if any.
func (b *nftBackend) List(network string) ([]string, error) {
	if err := validNetwork(network); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	name := nftTableName(network)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.nftPath, "list", "table", "inet", name)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var out []string
	if err := cmd.Run(); err != nil {
		if !strings.Contains(stderr.String(), "No such file or directory") {
			return nil, errorf("nftables: list table inet %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
		}
	} else {
		out = parseNftList(stdout.String())
	}
	conn, err := nlOpen()
	if err != nil {
		return nil, errorf("nftables: network %s: %w", network, err)
	}
	defer nlClose(conn)
	have, err := existingTables(conn, network)
	if err != nil {
		return nil, errorf("nftables: network %s: %w", network, err)
	}
	listTable := func(family knftables.Family, name string) error {
		stdout.Reset()
		stderr.Reset()
		cmd := exec.CommandContext(ctx, b.nftPath, "list", "table", string(family), name)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return errorf("nftables: list table %s %s: %w: %s", family, name, err, strings.TrimSpace(stderr.String()))
		}
		for _, l := range parseNftList(stdout.String()) {
			out = append(out, string(family)+" "+name+" "+l)
		}
		return nil
	}
	for _, t := range have.ports {
		if err := listTable(t.family, t.name); err != nil {
			return nil, err
		}
		l, err := listPorts(conn, t)
		if err != nil {
			return nil, errorf("nftables: network %s: %w", network, err)
		}
		out = append(out, l...)
	}
	if have.fwd != nil {
		if err := listTable(knftables.InetFamily, nftFwdTableName(network)); err != nil {
			return nil, err
		}
		l, err := listForwards(conn, network)
		if err != nil {
			return nil, errorf("nftables: network %s: %w", network, err)
		}
		out = append(out, l...)
	}
	if have.overlay {
		if err := listTable(knftables.BridgeFamily, nftOverlayTableName(network)); err != nil {
			return nil, err
		}
	}
	for _, f := range b.compat() {
		l, err := f.list(network)
		if err != nil {
			return nil, errorf("nftables: network %s: %w", network, err)
		}
		out = append(out, l...)
	}
	return out, nil
}

// parseNftList turns `nft list table` output into "chain: rule" lines.
func parseNftList(s string) []string {
	var out []string
	chain := ""
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "chain ") && strings.HasSuffix(line, "{"):
			chain = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "chain "), "{"))
		case line == "}":
			chain = ""
		case chain == "" || line == "" || strings.HasPrefix(line, "type ") || strings.HasPrefix(line, "comment "):
		default:
			out = append(out, chain+": "+line)
		}
	}
	return out
}
