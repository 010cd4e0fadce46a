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

// xtEnsurePort fills the port's chain, then adds the missing jumps to it.
// The port's jump in the network's dispatch chain is added holding the
// network's guard lock shared, so that ports are guarded at once; the
// dispatch chain and its hook jump, when missing, are created holding it
// exclusively, so that they never vanish under a port being added (see
// xtRemovePort).
func (b *iptBackend) xtEnsurePort(x xtChains, network, port string, rules [][]string) error {
	pc, dc := asPortChain(port), asDispatchChain(network)
	if err := x.fill(pc, rules); err != nil {
		return err
	}
	jump := []string{"-i", port, "-j", pc}
	for attempt := 0; ; attempt++ {
		var ready bool
		err := b.guardLocked(network, true, func() error {
			var err error
			ready, err = xtAddJump(x, dc, jump)
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

// xtAddJump adds jump to the dispatch chain dc, if dc and its jump from the
// hook exist; false (and nothing changed) when they do not.
func xtAddJump(x xtChains, dc string, jump []string) (bool, error) {
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
	if slices.ContainsFunc(l, func(f []string) bool { return sameRule(f, jump) }) {
		return true, nil
	}
	return true, x.appendRule(dc, jump...)
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
	if e.restore == "" {
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
	var in bytes.Buffer
	fmt.Fprintf(&in, "*%s\n:%s RETURN\n", e.table, chain)
	for _, r := range rules {
		// Every token is a validated name, an address or a constant: no quoting needed.
		fmt.Fprintf(&in, "-A %s %s\n", chain, strings.Join(r, " "))
	}
	in.WriteString("COMMIT\n")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, e.restore, "--noflush")
	c.Stdin = &in
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", e.name(), err, strings.TrimSpace(string(out)))
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
	return r.f.apply(ourChain{table: "raw", name: chain, rules: rules})
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
	if err := p.validate(); err != nil {
		return err
	}
	tools, err := b.portTools(p.Bridged, true)
	if err != nil {
		return errorf("iptables: port %s: %w", p.Port, err)
	}
	// A port that changed kind (bridged ↔ routed) leaves nothing behind.
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
	if err := b.noteGuard(p.Network, p.Port, kindOf(p.Bridged)); err != nil {
		return err
	}
	for _, x := range tools {
		var rules [][]string
		switch t := x.(type) {
		case iptRaw:
			rules = iptPortSpecs(p, t.f.family)
		case *execTool:
			if p.Bridged {
				rules = ebtSpecs(p)
			} else {
				rules = arptSpecs(p)
			}
		}
		if err := b.xtEnsurePort(x, p.Network, p.Port, rules); err != nil {
			return errorf("iptables: port %s: %w", p.Port, err)
		}
	}
	return nil
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
