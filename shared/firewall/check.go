package firewall

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Check compares what the kernel holds for network r with what Ensure
// installs: each backend looks at its own tables or chains, their rule
// counts and the jumps to them, and at what elsewhere would cut the
// network's guests off (an iptables FORWARD policy DROP that the nftables
// backend's compatibility chain does not answer). One line per problem, each
// ending with what to do; none when the rules are intact.

const rerun = "; run start again (network-virtual start net=%s)"

func (b *nftBackend) Check(r NetworkRules) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	name := nftTableName(r.Network)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.nftPath, "list", "table", "inet", name)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var problems []string
	if err := cmd.Run(); err != nil {
		if !strings.Contains(stderr.String(), "No such file or directory") {
			return nil, errorf("nftables: list table inet %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
		}
		problems = append(problems, fmt.Sprintf("nftables: table inet %s is missing (deleted by another tool?)"+rerun, name, r.Network))
	} else {
		have := map[string]int{}
		for _, l := range parseNftList(stdout.String()) {
			chain, _, _ := strings.Cut(l, ": ")
			have[chain]++
		}
		want := map[string]int{}
		for _, rl := range plan(r) {
			want[rl.chain]++
		}
		for _, chain := range sortedKeys(want) {
			if have[chain] != want[chain] {
				problems = append(problems, fmt.Sprintf("nftables: chain %s of table inet %s has %d rules, want %d (changed by another tool?)"+rerun,
					chain, name, have[chain], want[chain], r.Network))
			}
		}
	}
	tables, err := listExistingTables(r.Network)
	if err != nil {
		return nil, errorf("nftables: network %s: %w", r.Network, err)
	}
	for _, t := range nftPortTables(r.Network) {
		if t.bridged == (r.Bridge != "") && !slices.ContainsFunc(tables.ports, func(p nftPortTable) bool { return p.name == t.name && p.family == t.family }) {
			problems = append(problems, fmt.Sprintf("nftables: table %s (guest antispoof) is missing: guarded guests are unguarded"+rerun+" and re-attach them", t, r.Network))
		}
	}
	for _, f := range b.compat() {
		p, err := f.checkCompat(r)
		if err != nil {
			return nil, errorf("nftables: network %s: %w", r.Network, err)
		}
		problems = append(problems, p...)
	}
	return problems, nil
}

// checkCompat: where Docker's DOCKER-USER exists or FORWARD's policy is DROP,
// an accept in brouter's nft table does not get the guests through; the
// compatibility chain (syncDockerCompat) must be there and jumped to.
func (f *iptFamily) checkCompat(r NetworkRules) ([]string, error) {
	from, err := f.dockerHooks()
	if err != nil || len(from) == 0 || len(f.specs(r.Network, plan(r), chainForward, true)) == 0 {
		return nil, err
	}
	name := fwdChain(r.Network)
	ok, err := f.chainExists("filter", name)
	if err == nil && ok {
		ok, err = f.ipt.Exists("filter", from[0], "-j", name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: check %s: %w", f.cmd, name, err)
	}
	if !ok {
		why := "FORWARD's policy is DROP"
		if from[0] == dockerUser {
			why = "Docker's DOCKER-USER chain exists"
		}
		return []string{fmt.Sprintf("%s: %s and nothing jumps to brouter's accepts (%s): forwarded traffic of the guests is dropped"+rerun,
			f.cmd, why, name, r.Network)}, nil
	}
	return nil, nil
}

func (b *iptBackend) Check(r NetworkRules) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	rules := plan(r)
	var problems []string
	for _, f := range b.families() {
		hooks, err := f.forwardHooks()
		if err != nil {
			return nil, errorf("iptables: network %s: %w", r.Network, err)
		}
		for _, role := range iptRoles {
			specs := f.specs(r.Network, rules, role.role, false)
			if role.role != chainForward && len(specs) == 0 && !jumpedTo(rules, role.role) {
				continue
			}
			from := role.hooks()
			if role.role == chainForward {
				from = hooks
			}
			p, err := f.checkChain(role.table, role.name(r.Network), len(specs), from)
			if err != nil {
				return nil, errorf("iptables: network %s: %w", r.Network, err)
			}
			for _, l := range p {
				problems = append(problems, fmt.Sprintf(l+rerun, r.Network))
			}
		}
	}
	return problems, nil
}

// checkChain reports a chain of ours that is missing, has another number of
// rules than want, or is not jumped to from each of from.
func (f *iptFamily) checkChain(table, chain string, want int, from []string) ([]string, error) {
	ok, err := f.chainExists(table, chain)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []string{fmt.Sprintf("%s: chain %s (table %s) is missing (flushed or deleted by another tool?)", f.cmd, chain, table)}, nil
	}
	var problems []string
	lines, err := f.ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("%s: list %s: %w", f.cmd, chain, err)
	}
	have := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			have++
		}
	}
	if have != want {
		problems = append(problems, fmt.Sprintf("%s: chain %s (table %s) has %d rules, want %d (changed by another tool?)", f.cmd, chain, table, have, want))
	}
	for _, h := range from {
		ok, err := f.ipt.Exists(table, h, "-j", chain)
		if err != nil {
			return nil, fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, h, chain, err)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: the jump from %s to %s (table %s) is missing (flushed by another tool?)", f.cmd, h, chain, table))
		}
	}
	return problems, nil
}

// Check on the Fake reports a network it has no rules for.
func (f *Fake) Check(r NetworkRules) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nets[r.Network]; !ok || !slices.Equal(n.lines, nftLines(r)) {
		return []string{fmt.Sprintf("fake: rules of network %s differ from its plan"+rerun, r.Network, r.Network)}, nil
	}
	return nil, nil
}
