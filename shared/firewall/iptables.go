package firewall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	gnftables "github.com/google/nftables"
)

// iptables layout of a network NET (per family: iptables, ip6tables):
//
//	filter BR-FWD-NET  jumped from FORWARD (and from DOCKER-USER when it exists)
//	nat    BR-NAT-NET  jumped from POSTROUTING (IPv4, nat mode only)
//	raw    BROUTER-AS-NET, BRAS-PORT: routed guest ports (iptables_ports.go)
//	nat    BR-DNAT-NET, BRFW-PORT, BR-HAIRPIN-NET: published ports (iptables_forwards.go)
//
// Atomicity: a chain's content is replaced by one `iptables-restore --noflush`
// run that declares the chain (which flushes it) and appends its rules. The
// kernel (legacy: one table swap; nft: one transaction) applies that at once,
// so packets never see a half-filled chain. Jumps are inserted afterwards, only
// when absent, so an existing jump keeps pointing at the (replaced) chain.
// Built-in chains are only ever given or relieved of our jump: their policy and
// other rules are never touched.

const (
	builtinFwd  = "FORWARD"
	builtinPost = "POSTROUTING"
	builtinIn   = "INPUT"
	builtinPre  = "PREROUTING"
)

func fwdChain(network string) string { return "BR-FWD-" + network }
func natChain(network string) string { return "BR-NAT-" + network }
func inChain(network string) string  { return "BR-IN-" + network }
func preChain(network string) string { return "BR-PRE-" + network }
func outChain(network string) string { return "BR-OUT-" + network } // the outgoing filter
func incChain(network string) string { return "BR-INC-" + network } // the incoming filter

// iptJumpTarget is the iptables chain of a non-base chain role of network.
func iptJumpTarget(role, network string) string {
	for _, r := range iptRoles {
		if r.role == role {
			return r.name(network)
		}
	}
	return "BR-UNKNOWN-" + role // not a role of the plan: iptables-restore refuses it
}

// iptRole is where a chain role of the plan lives in iptables.
type iptRole struct {
	role, table string
	name        func(network string) string
	hook        string
}

// iptRoles are the plan's chain roles (rules.go) in iptables. The forward
// chain is also jumped from DOCKER-USER on Docker hosts (forwardHooks). The
// policy's filters (no hook) are jumped from the forward chain, which is
// removed before them.
var iptRoles = []iptRole{
	{chainForward, "filter", fwdChain, builtinFwd},
	{chainInput, "filter", inChain, builtinIn},
	{chainPostrouting, "nat", natChain, builtinPost},
	{chainPrerouting, "raw", preChain, builtinPre},
	{chainOutgoing, "filter", outChain, ""},
	{chainIncoming, "filter", incChain, ""},
}

// jumpedTo reports whether a rule of the plan jumps to the chain role: the
// chain must exist in every family then, if only empty (a filter whose
// rules are all of the other family).
func jumpedTo(rules []rule, role string) bool {
	return slices.ContainsFunc(rules, func(r rule) bool { return r.verdict == jump && r.jump == role })
}

// hooks is where the role's chain is jumped from (none for a filter's).
func (r iptRole) hooks() []string {
	if r.hook == "" {
		return nil
	}
	return []string{r.hook}
}

// skipRemoval: ip6tables-nft creates an empty nat table merely by listing
// it, and IPv6 is masqueraded only with nat6: while the table does not
// exist, nothing of ours can be there, and it is left alone.
func (f *iptFamily) skipRemoval(r iptRole) bool {
	return r.table == "nat" && f.family == 6 && !ip6NATExists()
}

// ip6NATExists reports whether the ip6 nat table exists, without creating
// it: in nf_tables (ip6tables-nft) or in x_tables (ip6tables-legacy).
func ip6NATExists() bool {
	if b, err := os.ReadFile("/proc/net/ip6_tables_names"); err == nil && slices.Contains(strings.Fields(string(b)), "nat") {
		return true
	}
	conn, err := nlOpen()
	if err != nil {
		return true // cannot tell: look, at the cost of the empty table
	}
	defer nlClose(conn)
	tables, err := conn.ListTablesOfFamily(gnftables.TableFamilyIPv6)
	if err != nil {
		return true
	}
	return slices.ContainsFunc(tables, func(t *gnftables.Table) bool { return t.Name == "nat" })
}

// iptFamily is iptables (4) or ip6tables (6) on this host.
type iptFamily struct {
	family  int
	cmd     string // "iptables" or "ip6tables", for messages and List
	ipt     *iptables.IPTables
	restore string // path of the matching *-restore
}

func newIPTFamily(family int) (*iptFamily, error) {
	proto, cmd := iptables.ProtocolIPv4, "iptables"
	if family == 6 {
		proto, cmd = iptables.ProtocolIPv6, "ip6tables"
	}
	if _, err := exec.LookPath(cmd); err != nil {
		return nil, fmt.Errorf("%s not found (install the Debian package iptables): %w", cmd, err)
	}
	restore, err := exec.LookPath(cmd + "-restore")
	if err != nil {
		return nil, fmt.Errorf("%s-restore not found (install the Debian package iptables): %w", cmd, err)
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("%s is not usable: %w", cmd, err)
	}
	return &iptFamily{family: family, cmd: cmd, ipt: ipt, restore: restore}, nil
}

// ourChain is one chain we own, its full content, and the chains that must jump to it.
type ourChain struct {
	table, name string
	rules       [][]string
	from        []string
}

// appendRules appends rules to an existing chain of table in one restore
// (the chain is not declared: --noflush leaves its content).
func (f *iptFamily) appendRules(table, chain string, rules [][]string) error {
	var in bytes.Buffer
	fmt.Fprintf(&in, "*%s\n", table)
	writeAppends(&in, chain, rules)
	in.WriteString("COMMIT\n")
	return f.restoreNoflush(&in)
}

func (f *iptFamily) restoreNoflush(in *bytes.Buffer) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.restore, "--noflush", "--wait=10")
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", f.cmd, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// apply replaces the content of chains atomically, then adds the missing jumps.
func (f *iptFamily) apply(chains ...ourChain) error {
	var in bytes.Buffer
	for _, table := range []string{"filter", "nat", "raw"} {
		open := false
		for _, c := range chains {
			if c.table != table {
				continue
			}
			if !open {
				fmt.Fprintf(&in, "*%s\n", table)
				open = true
			}
			// Declared before any rule, so that a rule may jump to a chain listed after its own.
			fmt.Fprintf(&in, ":%s - [0:0]\n", c.name)
		}
		for _, c := range chains {
			if c.table != table {
				continue
			}
			for _, r := range c.rules {
				// Every token is a validated name, a prefix or a constant: no quoting needed.
				fmt.Fprintf(&in, "-A %s %s\n", c.name, strings.Join(r, " "))
			}
		}
		if open {
			in.WriteString("COMMIT\n")
		}
	}
	if err := f.restoreNoflush(&in); err != nil {
		return err
	}
	for _, c := range chains {
		for _, from := range c.from {
			ok, err := f.ipt.Exists(c.table, from, "-j", c.name)
			if err != nil {
				return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, from, c.name, err)
			}
			if !ok {
				if err := f.ipt.Insert(c.table, from, 1, "-j", c.name); err != nil {
					return fmt.Errorf("%s: insert jump %s -> %s: %w", f.cmd, from, c.name, err)
				}
			}
		}
	}
	return nil
}

// unjump deletes every jump from the chains from (those that exist) to chain.
func (f *iptFamily) unjump(table, chain string, from ...string) error {
	if ok, err := f.chainExists(table, chain); err != nil || !ok {
		return err // no chain, no jumps to it: iptables refuses dangling jumps
	}
	for _, h := range from {
		if ok, err := f.ipt.ChainExists(table, h); err != nil {
			return fmt.Errorf("%s: list chains of %s: %w", f.cmd, table, err)
		} else if !ok {
			continue
		}
		for {
			ok, err := f.ipt.Exists(table, h, "-j", chain)
			if err != nil {
				return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, h, chain, err)
			}
			if !ok {
				break
			}
			if err := f.ipt.Delete(table, h, "-j", chain); err != nil {
				return fmt.Errorf("%s: delete jump %s -> %s: %w", f.cmd, h, chain, err)
			}
		}
	}
	return nil
}

// removeChain deletes the jumps to one of our chains, then the chain.
func (f *iptFamily) removeChain(table, chain string, from ...string) error {
	if err := f.unjump(table, chain, from...); err != nil {
		return err
	}
	ok, err := f.ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("%s: list chains of %s: %w", f.cmd, table, err)
	}
	if ok {
		if err := f.ipt.ClearAndDeleteChain(table, chain); err != nil {
			return fmt.Errorf("%s: delete chain %s: %w", f.cmd, chain, err)
		}
	}
	return nil
}

// removeChains deletes everything any backend put in this family for network.
func (f *iptFamily) removeChains(network string) error {
	for _, r := range iptRoles {
		if f.skipRemoval(r) {
			continue
		}
		if err := f.removeChain(r.table, r.name(network), append(r.hooks(), dockerUser)...); err != nil {
			return err
		}
	}
	return f.removeAllForwards(network)
}

func (f *iptFamily) chainExists(table, chain string) (bool, error) {
	ok, err := f.ipt.ChainExists(table, chain)
	if err != nil {
		return false, fmt.Errorf("%s: list chains of %s: %w", f.cmd, table, err)
	}
	return ok, nil
}

// list prints our chains and the jumps to them as iptables command lines.
func (f *iptFamily) list(network string) ([]string, error) {
	var out []string
	for _, r := range iptRoles {
		if f.skipRemoval(r) {
			continue
		}
		c := struct{ table, name, from string }{r.table, r.name(network), r.hook}
		if r.role == chainForward {
			c.from += " " + dockerUser
		}
		if ok, err := f.chainExists(c.table, c.name); err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		for _, h := range strings.Fields(c.from) {
			if ok, err := f.chainExists(c.table, h); err != nil || !ok {
				if err != nil {
					return nil, err
				}
				continue
			}
			if ok, err := f.ipt.Exists(c.table, h, "-j", c.name); err != nil {
				return nil, fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, h, c.name, err)
			} else if ok {
				out = append(out, fmt.Sprintf("%s -t %s -A %s -j %s", f.cmd, c.table, h, c.name))
			}
		}
		lines, err := f.ipt.List(c.table, c.name)
		if err != nil {
			return nil, fmt.Errorf("%s: list %s: %w", f.cmd, c.name, err)
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "-A ") {
				out = append(out, fmt.Sprintf("%s -t %s %s", f.cmd, c.table, l))
			}
		}
	}
	return out, nil
}

// specs renders the plan's rules of one chain role of network for this family.
func (f *iptFamily) specs(network string, rules []rule, chain string, acceptOnly bool) [][]string {
	var out [][]string
	for _, r := range rules {
		if r.chain == chain && (!acceptOnly || r.verdict == accept) {
			out = append(out, iptRules(r, f.family, network)...)
		}
	}
	return out
}

// iptBackend installs a network's rules as BR-FWD-NET / BR-NAT-NET chains.
type iptBackend struct {
	v4, v6 *iptFamily // v6 is nil when ip6tables is missing
	rec    Records    // nil: none (iptables_records.go)
}

func newIPTables(rec Records) (*iptBackend, error) {
	v4, err := newIPTFamily(4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	// Probe that it works here (root, kernel support) without changing anything.
	if _, err := v4.ipt.ListChains("filter"); err != nil {
		return nil, fmt.Errorf("iptables: not usable (needs root): %w", err)
	}
	v6, _ := newIPTFamily(6)
	return &iptBackend{v4: v4, v6: v6, rec: rec}, nil
}

func (b *iptBackend) Name() string { return KindIPTables }

func (b *iptBackend) families() []*iptFamily {
	if b.v6 == nil {
		return []*iptFamily{b.v4}
	}
	return []*iptFamily{b.v4, b.v6}
}

func (b *iptBackend) Ensure(r NetworkRules) error {
	if err := r.validate(); err != nil {
		return err
	}
	if b.v6 == nil {
		for _, s := range r.Subnets {
			if s.Addr().Is6() {
				return errorf("iptables: network %s: subnet %v needs ip6tables (install the Debian package iptables)", r.Network, s)
			}
		}
	}
	rules := plan(r)
	for _, f := range b.families() {
		from, err := f.forwardHooks()
		if err != nil {
			return errorf("iptables: network %s: %w", r.Network, err)
		}
		var chains []ourChain
		var unused []iptRole
		for _, role := range iptRoles {
			specs := f.specs(r.Network, rules, role.role, false)
			switch {
			case role.role == chainForward: // always: it holds the network's policy
				chains = append(chains, ourChain{table: role.table, name: role.name(r.Network), rules: specs, from: from})
			case len(specs) > 0 || jumpedTo(rules, role.role):
				chains = append(chains, ourChain{table: role.table, name: role.name(r.Network), rules: specs, from: role.hooks()})
			case !f.skipRemoval(role):
				unused = append(unused, role)
			}
		}
		if err := f.apply(chains...); err != nil {
			return errorf("iptables: network %s: %w", r.Network, err)
		}
		for _, role := range unused {
			if err := f.removeChain(role.table, role.name(r.Network), role.hooks()...); err != nil {
				return errorf("iptables: network %s: %w", r.Network, err)
			}
		}
		// Published ports' masquerade follows the network's bridge and subnets.
		// (The tunnel's filter, below, is ebtables': once, not per family.)
		if ok, err := f.chainExists("nat", hairpinChain(r.Network)); err != nil {
			return errorf("iptables: network %s: %w", r.Network, err)
		} else if ok {
			if err := f.apply(ourChain{table: "nat", name: hairpinChain(r.Network), rules: f.hairpinSpecs(r.Bridge, r.Subnets), from: []string{builtinPost}}); err != nil {
				return errorf("iptables: network %s: %w", r.Network, err)
			}
		}
	}
	// Without an overlay, ebtables is not even asked (its first use creates
	// its table): the chains of an overlay dropped from a running network's
	// config, inert without their device, go with the network (Remove).
	if r.Overlay != nil {
		if err := b.ensureOverlay(r.Network, r.Overlay); err != nil {
			return errorf("iptables: network %s: overlay: %w", r.Network, err)
		}
	}
	// A network whose ports have no chains yet: from now on every guarded
	// port has a record (iptables_records.go).
	return b.guardLocked(r.Network, false, func() error { b.noteComplete(r.Network); return nil })
}

func (b *iptBackend) Remove(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	for _, f := range b.families() {
		if err := f.removeChains(network); err != nil {
			return errorf("iptables: network %s: %w", network, err)
		}
	}
	tools, err := b.allPortTools()
	if err != nil {
		return errorf("iptables: network %s: %w", network, err)
	}
	err = b.guardLocked(network, false, func() error {
		for _, x := range tools {
			if err := xtRemoveNetwork(x, network); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errorf("iptables: network %s: %w", network, err)
	}
	if err := b.removeOverlay(network); err != nil {
		return errorf("iptables: network %s: overlay: %w", network, err)
	}
	return b.forgetNetwork(network)
}

func (b *iptBackend) List(network string) ([]string, error) {
	if err := validNetwork(network); err != nil {
		return nil, err
	}
	var out []string
	published := map[string][]Forward{}
	for _, f := range b.families() {
		l, err := f.list(network)
		if err != nil {
			return nil, errorf("iptables: network %s: %w", network, err)
		}
		out = append(out, l...)
		l, pub, err := f.listForwards(network)
		if err != nil {
			return nil, errorf("iptables: network %s: %w", network, err)
		}
		out = append(out, l...)
		for port, fws := range pub {
			published[port] = append(published[port], fws...)
		}
	}
	for _, port := range sortedKeys(published) {
		sortForwards(published[port])
		for _, fw := range published[port] {
			out = append(out, ForwardLine(port, fw))
		}
	}
	tools, err := b.allPortTools()
	if err != nil {
		return nil, errorf("iptables: network %s: %w", network, err)
	}
	for _, x := range tools {
		l, err := xtList(x, network)
		if err != nil {
			return nil, errorf("iptables: network %s: %w", network, err)
		}
		out = append(out, l...)
	}
	l, err := b.listOverlay(network)
	if err != nil {
		return nil, errorf("iptables: network %s: overlay: %w", network, err)
	}
	return append(out, l...), nil
}
