package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Per-port antispoof with the iptables family of tools, which have no sets:
// one small chain per guarded port, BRAS-PORT, jumped from the network's
// dispatch chain BROUTER-AS-NET (`-i PORT -j BRAS-PORT`), itself jumped from
// the hook:
//
//	bridged ports  ebtables  -t nat  PREROUTING → BROUTER-AS-NET → BRAS-PORT
//	               (bridged and to-host frames alike; ARP, IPv4, IPv6 in one chain)
//	routed ports   iptables, ip6tables -t raw PREROUTING → ... (before conntrack)
//	               arptables INPUT → ...
//
// A port chain's content is replaced atomically by ebtables-restore /
// iptables-restore --noflush (arptables-restore flushes the whole table even
// with --noflush, so arptables chains are refilled rule by rule). Jumps are
// added only after their chain is filled, and the dispatch chain and its hook
// jump go away with the network's last guarded port.

func asDispatchChain(network string) string { return "BROUTER-AS-" + network } // ≤ 26 characters
func asPortChain(port string) string        { return "BRAS-" + port }          // ≤ 20 characters

// xtChains is one tool's view of the chains used for antispoof.
type xtChains interface {
	name() string
	hook() string
	chainExists(chain string) (bool, error)
	newChain(chain string) error               // empty, falling through to the caller
	fill(chain string, rules [][]string) error // create or replace the chain's content
	fillAll(fills []chainFill) error           // fill for each, in one go where the tool can
	appendAll(chain string, specs [][]string) error
	rules(chain string) ([][]string, error)    // each rule's fields, without the chain name
	insert(chain string, spec ...string) error // at the top
	appendRule(chain string, spec ...string) error
	deleteRule(chain string, spec ...string) error
	deleteChain(chain string) error // flush and delete
}

// sameRule reports whether the fields of a listed rule are spec, in any order
// (ebtables and arptables print matches and target in their own order).
func sameRule(fields, spec []string) bool {
	a, b := slices.Clone(fields), slices.Clone(spec)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func hasRule(x xtChains, chain string, spec ...string) (bool, error) {
	l, err := x.rules(chain)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(l, func(f []string) bool { return sameRule(f, spec) }), nil
}

// chainFill is one port chain's whole content.
type chainFill struct {
	chain string
	rules [][]string
}

// xtEnsurePorts fills the ports' chains, then adds the missing jumps to
// them, each step in one call of the tool where it can (a reconcile of
// hundreds of ports is a few execs, not a few per port). The ports' jumps
// in the network's dispatch chain are added holding the network's guard
// lock shared, so that ports are guarded at once; the dispatch chain and
// its hook jump, when missing, are created holding it exclusively, so that
// they never vanish under a port being added (see xtRemovePort).
func (b *iptBackend) xtEnsurePorts(x xtChains, network string, ports []string, fills []chainFill) error {
	dc := asDispatchChain(network)
	if err := x.fillAll(fills); err != nil {
		return err
	}
	jumps := make([][]string, len(ports))
	for i, port := range ports {
		jumps[i] = []string{"-i", port, "-j", asPortChain(port)}
	}
	for attempt := 0; ; attempt++ {
		var ready bool
		err := b.guardLocked(network, true, func() error {
			var err error
			ready, err = xtAddJumps(x, dc, jumps)
			return err
		})
		if err != nil || ready {
			return err
		}
		if attempt > 0 {
			return fmt.Errorf("%s: chain %s or its jump from %s vanished right after their creation", x.name(), dc, x.hook())
		}
		if err := b.guardLocked(network, false, func() error { return b.xtSetupDispatch(x, network) }); err != nil {
			return err
		}
	}
}

// xtAddJumps adds the jumps missing from the dispatch chain dc, if dc and
// its jump from the hook exist; false (and nothing changed) when they do not.
func xtAddJumps(x xtChains, dc string, jumps [][]string) (bool, error) {
	l, err := x.rules(dc)
	if err != nil {
		if ok, e := x.chainExists(dc); e == nil && !ok {
			return false, nil
		}
		return false, err
	}
	if ok, err := hasRule(x, x.hook(), "-j", dc); err != nil || !ok {
		return false, err
	}
	var missing [][]string
	for _, j := range jumps {
		if !slices.ContainsFunc(l, func(f []string) bool { return sameRule(f, j) }) {
			missing = append(missing, j)
		}
	}
	if len(missing) == 0 {
		return true, nil
	}
	return true, x.appendAll(dc, missing)
}

// xtSetupDispatch creates the network's dispatch chain and its jump from the
// hook, those missing (the caller holds the guard lock exclusively).
func (b *iptBackend) xtSetupDispatch(x xtChains, network string) error {
	dc := asDispatchChain(network)
	if ok, err := x.chainExists(dc); err != nil {
		return err
	} else if !ok {
		b.noteComplete(network)
		if err := x.newChain(dc); err != nil {
			return err
		}
	}
	if ok, err := hasRule(x, x.hook(), "-j", dc); err != nil {
		return err
	} else if !ok {
		// First, so that an earlier ACCEPT of someone else cannot skip the checks.
		return x.insert(x.hook(), "-j", dc)
	}
	return nil
}

// xtRemovePort deletes the port's jumps and chain, and the dispatch chain
// when it was the network's last guarded port. Absent pieces are fine. The
// jump goes holding the guard lock shared; the dispatch chain, found empty
// again, exclusively.
func (b *iptBackend) xtRemovePort(x xtChains, network, port string) error {
	pc, dc := asPortChain(port), asDispatchChain(network)
	jump := []string{"-i", port, "-j", pc}
	others := false // the dispatch chain has other ports' jumps, or is missing
	err := b.guardLocked(network, true, func() error {
		l, err := x.rules(dc)
		if err != nil {
			if ok, e := x.chainExists(dc); e == nil && !ok {
				others = true // nothing to remove
				return nil
			}
			return err
		}
		mine := 0
		for _, f := range l {
			if sameRule(f, jump) {
				mine++
				if err := x.deleteRule(dc, jump...); err != nil {
					return err
				}
			}
		}
		rest := len(l) - mine
		if mine > 0 && rest > 0 {
			// Listed again after the deletion: of ports leaving at once,
			// the last to delete its jump sees none left.
			if l, err = x.rules(dc); err != nil {
				return err
			}
			rest = len(l)
		}
		others = rest > 0
		return nil
	})
	if err != nil {
		return err
	}
	if err := xtDeleteChainIfExists(x, pc); err != nil {
		return err
	}
	if others {
		return nil
	}
	return b.guardLocked(network, false, func() error { return xtRemoveDispatchIfEmpty(x, network) })
}

// xtDeleteChainIfExists deletes chain (flushing it first) if it is there.
func xtDeleteChainIfExists(x xtChains, chain string) error {
	if ok, err := x.chainExists(chain); err != nil || !ok {
		return err
	}
	return x.deleteChain(chain)
}

// xtRemoveDispatchIfEmpty deletes the dispatch chain and its hook jumps when
// no port is jumped from it (the caller holds the guard lock exclusively).
func xtRemoveDispatchIfEmpty(x xtChains, network string) error {
	dc := asDispatchChain(network)
	if ok, err := x.chainExists(dc); err != nil || !ok {
		return err
	}
	if l, err := x.rules(dc); err != nil || len(l) > 0 {
		return err
	}
	for {
		ok, err := hasRule(x, x.hook(), "-j", dc)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := x.deleteRule(x.hook(), "-j", dc); err != nil {
			return err
		}
	}
	return x.deleteChain(dc)
}

// xtRemoveNetwork removes every guarded port of the network, then its
// dispatch chain (the caller holds the guard lock exclusively).
func xtRemoveNetwork(x xtChains, network string) error {
	dc := asDispatchChain(network)
	if ok, err := x.chainExists(dc); err != nil || !ok {
		return err
	}
	l, err := x.rules(dc)
	if err != nil {
		return err
	}
	for _, f := range l {
		i := slices.Index(f, "-i")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		pc := asPortChain(f[i+1])
		if err := x.deleteRule(dc, "-i", f[i+1], "-j", pc); err != nil {
			return err
		}
		if err := xtDeleteChainIfExists(x, pc); err != nil {
			return err
		}
	}
	return xtRemoveDispatchIfEmpty(x, network)
}

// xtList prints the network's dispatch chain and port chains, for List.
func xtList(x xtChains, network string) ([]string, error) {
	dc := asDispatchChain(network)
	if ok, err := x.chainExists(dc); err != nil || !ok {
		return nil, err
	}
	l, err := x.rules(dc)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range l {
		out = append(out, fmt.Sprintf("%s -A %s %s", x.name(), dc, strings.Join(f, " ")))
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) {
			pl, err := x.rules(f[i+1])
			if err != nil {
				return nil, err
			}
			for _, pf := range pl {
				out = append(out, fmt.Sprintf("%s -A %s %s", x.name(), f[i+1], strings.Join(pf, " ")))
			}
		}
	}
	return out, nil
}

// execTool runs ebtables (table nat) or arptables (table filter) without a shell.
type execTool struct {
	cmd, restore string // paths; restore "" for arptables (see above)
	table        string
	hookChain    string
	policy       []string // extra arguments of -N (ebtables: "-P RETURN")
}

func (e *execTool) name() string {
	return strings.TrimSuffix(e.cmd[strings.LastIndex(e.cmd, "/")+1:], "-nft")
}
func (e *execTool) hook() string { return e.hookChain }

func (e *execTool) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if e.table != "" {
		args = append([]string{"-t", e.table}, args...)
	}
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, e.cmd, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", e.name(), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// list runs -L on chain. arptables gets -n: without it, it resolves every
// address in the chain through DNS, which hangs a host without a resolver.
func (e *execTool) list(chain string) (string, error) {
	if strings.HasSuffix(e.cmd, "arptables") {
		return e.run("-n", "-L", chain)
	}
	return e.run("-L", chain)
}

func (e *execTool) chainExists(chain string) (bool, error) {
	_, err := e.list(chain)
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 { // "chain ... does not exist"
		return false, nil
	}
	return false, err
}

func (e *execTool) newChain(chain string) error {
	_, err := e.run(append([]string{"-N", chain}, e.policy...)...)
	return err
}

func (e *execTool) fill(chain string, rules [][]string) error {
	return e.fillAll([]chainFill{{chain, rules}})
}

// fillAll replaces the chains' content in one restore; arptables, whose
// restore flushes the whole table, chain by chain and rule by rule.
func (e *execTool) fillAll(fills []chainFill) error {
	if e.restore == "" {
		for _, c := range fills {
			if err := e.refill(c.chain, c.rules); err != nil {
				return err
			}
		}
		return nil
	}
	var in bytes.Buffer
	fmt.Fprintf(&in, "*%s\n", e.table)
	for _, c := range fills {
		fmt.Fprintf(&in, ":%s RETURN\n", c.chain)
		writeAppends(&in, c.chain, c.rules)
	}
	in.WriteString("COMMIT\n")
	return e.restoreNoflush(&in)
}

// appendAll appends rules to an existing chain (not declared: restore
// --noflush leaves its content).
func (e *execTool) appendAll(chain string, specs [][]string) error {
	if e.restore == "" {
		for _, r := range specs {
			if err := e.appendRule(chain, r...); err != nil {
				return err
			}
		}
		return nil
	}
	var in bytes.Buffer
	fmt.Fprintf(&in, "*%s\n", e.table)
	writeAppends(&in, chain, specs)
	in.WriteString("COMMIT\n")
	return e.restoreNoflush(&in)
}

// writeAppends writes an -A line per rule, then nothing else.
func writeAppends(in *bytes.Buffer, chain string, rules [][]string) {
	for _, r := range rules {
		// Every token is a validated name, an address or a constant: no quoting needed.
		fmt.Fprintf(in, "-A %s %s\n", chain, strings.Join(r, " "))
	}
}

// restoreNoflush feeds in (whole tables, each ending in COMMIT) to the tool's restore.
func (e *execTool) restoreNoflush(in *bytes.Buffer) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, e.restore, "--noflush")
	c.Stdin = in
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", e.name(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// refill empties (or creates) chain and appends rules one command each.
func (e *execTool) refill(chain string, rules [][]string) error {
	ok, err := e.chainExists(chain)
	if err != nil {
		return err
	}
	if !ok {
		if err := e.newChain(chain); err != nil {
			return err
		}
	} else if _, err := e.run("-F", chain); err != nil {
		return err
	}
	for _, r := range rules {
		if err := e.appendRule(chain, r...); err != nil {
			return err
		}
	}
	return nil
}

func (e *execTool) rules(chain string) ([][]string, error) {
	out, err := e.list(chain)
	if err != nil {
		return nil, err
	}
	var l [][]string
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "-") {
			l = append(l, strings.Fields(line))
		}
	}
	return l, nil
}

func (e *execTool) insert(chain string, spec ...string) error {
	_, err := e.run(append([]string{"-I", chain, "1"}, spec...)...)
	return err
}

func (e *execTool) appendRule(chain string, spec ...string) error {
	_, err := e.run(append([]string{"-A", chain}, spec...)...)
	return err
}

func (e *execTool) deleteRule(chain string, spec ...string) error {
	_, err := e.run(append([]string{"-D", chain}, spec...)...)
	return err
}

func (e *execTool) deleteChain(chain string) error {
	if _, err := e.run("-F", chain); err != nil {
		return err
	}
	_, err := e.run("-X", chain)
	return err
}

// iptRaw is iptables or ip6tables, table raw.
type iptRaw struct{ f *iptFamily }

func (r iptRaw) name() string { return r.f.cmd }
func (r iptRaw) hook() string { return "PREROUTING" }
func (r iptRaw) chainExists(chain string) (bool, error) {
	return r.f.chainExists("raw", chain)
}
func (r iptRaw) newChain(chain string) error { return r.f.ipt.NewChain("raw", chain) }
func (r iptRaw) fill(chain string, rules [][]string) error {
	return r.fillAll([]chainFill{{chain, rules}})
}
func (r iptRaw) fillAll(fills []chainFill) error {
	chains := make([]ourChain, len(fills))
	for i, c := range fills {
		chains[i] = ourChain{table: "raw", name: c.chain, rules: c.rules}
	}
	return r.f.apply(chains...)
}
func (r iptRaw) appendAll(chain string, specs [][]string) error {
	return r.f.appendRules("raw", chain, specs)
}
func (r iptRaw) rules(chain string) ([][]string, error) {
	lines, err := r.f.ipt.List("raw", chain)
	if err != nil {
		return nil, fmt.Errorf("%s: list %s: %w", r.f.cmd, chain, err)
	}
	var l [][]string
	for _, line := range lines {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "-A" {
			l = append(l, f[2:])
		}
	}
	return l, nil
}
func (r iptRaw) insert(chain string, spec ...string) error {
	return r.f.ipt.Insert("raw", chain, 1, spec...)
}
func (r iptRaw) appendRule(chain string, spec ...string) error {
	return r.f.ipt.Append("raw", chain, spec...)
}
func (r iptRaw) deleteRule(chain string, spec ...string) error {
	return r.f.ipt.Delete("raw", chain, spec...)
}
func (r iptRaw) deleteChain(chain string) error { return r.f.ipt.ClearAndDeleteChain("raw", chain) }

// ebtables returns the ebtables tool, or an error naming the package to install.
func (b *iptBackend) ebtables() (*execTool, error) {
	cmd, err := exec.LookPath("ebtables")
	if err != nil {
		return nil, fmt.Errorf("ebtables not found (install the Debian package iptables, which provides ebtables-nft, or ebtables): %w", err)
	}
	restore, err := exec.LookPath("ebtables-restore")
	if err != nil {
		return nil, fmt.Errorf("ebtables-restore not found (install the Debian package iptables, which provides ebtables-nft-restore): %w", err)
	}
	return &execTool{cmd: cmd, restore: restore, table: "nat", hookChain: "PREROUTING", policy: []string{"-P", "RETURN"}}, nil
}

func (b *iptBackend) arptables() (*execTool, error) {
	cmd, err := exec.LookPath("arptables")
	if err != nil {
		return nil, fmt.Errorf("arptables not found (install the Debian package iptables, which provides arptables-nft, or arptables): %w", err)
	}
	return &execTool{cmd: cmd, hookChain: "INPUT"}, nil
}

// portTools returns the tools that hold ports of the given kind. With
// required, a missing tool is an error; else it is skipped (nothing of ours
// can be there).
func (b *iptBackend) portTools(bridged, required bool) ([]xtChains, error) {
	// optional adds a tool, or skips it when missing and not required.
	var out []xtChains
	optional := func(t xtChains, err error) ([]xtChains, error) {
		if err != nil && required {
			return nil, err
		} else if err == nil {
			out = append(out, t)
		}
		return out, nil
	}
	if bridged {
		return optional(b.ebtables())
	}
	for _, f := range b.families() {
		out = append(out, iptRaw{f})
	}
	if required && b.v6 == nil {
		return nil, fmt.Errorf("ip6tables not found (install the Debian package iptables)")
	}
	return optional(b.arptables())
}

func (b *iptBackend) allPortTools() ([]xtChains, error) {
	br, err := b.portTools(true, false)
	if err != nil {
		return nil, err
	}
	rt, err := b.portTools(false, false)
	return append(br, rt...), err
}

// EnsurePort replaces the port's chain: that does not depend on what was in
// it. The backend records only the kind of each guarded port's chains
// (iptables_records.go), so that neither this nor RemovePort looks for the
// port in the tools of the other kind.
func (b *iptBackend) EnsurePort(p PortRules) error {
	return b.ensurePorts(p.Network, []PortRules{p})
}

// SyncPorts on iptables replaces each listed port's chains (EnsurePort keeps
// no records of their content, so there is nothing to distrust), all
// ports of a kind together.
func (b *iptBackend) SyncPorts(network string, ports []PortRules) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	for _, p := range ports {
		if p.Network != network {
			return errorf("port %s is of network %s, not %s", p.Port, p.Network, network)
		}
	}
	return b.ensurePorts(network, ports)
}

// ensurePorts installs the guards of ports of one network: bridged ports in
// ebtables, routed ones in iptables, ip6tables (raw) and arptables, one
// fill and one set of jumps per tool.
func (b *iptBackend) ensurePorts(network string, ports []PortRules) error {
	byKind := map[bool][]PortRules{}
	for _, p := range ports {
		if err := p.validate(); err != nil {
			return err
		}
		byKind[p.Bridged] = append(byKind[p.Bridged], p)
	}
	tools := map[bool][]xtChains{} // missing tools are an error before anything changes
	for bridged, group := range byKind {
		var err error
		if tools[bridged], err = b.portTools(bridged, true); err != nil {
			return errorf("iptables: port %s: %w", group[0].Port, err)
		}
	}
	for _, p := range ports {
		if err := b.prepareGuard(p); err != nil {
			return err
		}
	}
	for bridged, group := range byKind {
		names := make([]string, len(group))
		for i, p := range group {
			names[i] = p.Port
		}
		for _, x := range tools[bridged] {
			fills := make([]chainFill, len(group))
			for i, p := range group {
				fills[i] = chainFill{asPortChain(p.Port), xtPortSpecs(x, p)}
			}
			if err := b.xtEnsurePorts(x, network, names, fills); err != nil {
				return errorf("iptables: %s: %w", portList(names), err)
			}
		}
	}
	return nil
}

// prepareGuard removes what a port that changed kind (bridged ↔ routed)
// left behind, and records its kind before its chains exist.
func (b *iptBackend) prepareGuard(p PortRules) error {
	if was := b.guardKind(p.Network, p.Port); was == kindUnknown || was == kindOf(!p.Bridged) {
		other, err := b.portTools(!p.Bridged, false)
		if err != nil {
			return errorf("iptables: port %s: %w", p.Port, err)
		}
		for _, x := range other {
			if err := b.xtRemovePort(x, p.Network, p.Port); err != nil {
				return errorf("iptables: port %s: %w", p.Port, err)
			}
		}
	}
	return b.noteGuard(p.Network, p.Port, kindOf(p.Bridged))
}

// xtPortSpecs are the rules of p's chain for tool x.
func xtPortSpecs(x xtChains, p PortRules) [][]string {
	switch t := x.(type) {
	case iptRaw:
		return iptPortSpecs(p, t.f.family)
	case *execTool:
		if p.Bridged {
			return ebtSpecs(p)
		}
		return arptSpecs(p)
	}
	return nil
}

// portList names ports in an error: "port P", or "ports P, Q and 3 more".
func portList(ports []string) string {
	switch n := len(ports); {
	case n == 1:
		return "port " + ports[0]
	case n <= 3:
		return "ports " + strings.Join(ports, ", ")
	default:
		return fmt.Sprintf("ports %s and %d more", strings.Join(ports[:2], ", "), n-2)
	}
}

func (b *iptBackend) RemovePort(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	var tools []xtChains
	var err error
	switch b.guardKind(network, port) {
	case kindNone:
		return nil
	case kindBridged:
		tools, err = b.portTools(true, false)
	case kindRouted:
		tools, err = b.portTools(false, false)
	default:
		tools, err = b.allPortTools()
	}
	if err != nil {
		return errorf("iptables: port %s: %w", port, err)
	}
	for _, x := range tools {
		if err := b.xtRemovePort(x, network, port); err != nil {
			return errorf("iptables: port %s: %w", port, err)
		}
	}
	return b.forgetGuard(network, port)
}
