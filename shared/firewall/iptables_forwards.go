package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Published ports with iptables (IPv4) and ip6tables (IPv6), table nat:
//
//	PREROUTING, OUTPUT  -m addrtype --dst-type LOCAL -j BR-DNAT-NET
//	BR-DNAT-NET         -j BRFW-PORT, one jump per guest port with published ports
//	BRFW-PORT           [-d HOSTIP] -p PROTO -m PROTO --dport H -j DNAT --to-destination G:P
//	POSTROUTING         -j BR-HAIRPIN-NET
//	BR-HAIRPIN-NET      -s SUBNET -o BRIDGE -m conntrack --ctstate DNAT -j MASQUERADE,
//	                    per subnet of the family, and (IPv4) 127.0.0.0/8
//
// Unlike nftables (maps), the rules grow with the published ports: one rule
// per forward and one jump per guest port; iptables has no maps. A port's
// chain is replaced by one iptables-restore --noflush, then jumped to: atomic
// per family (IPv4 then IPv6). The network's chains go with its last
// published port. Ownership of a host port is checked first by reading the
// network's port chains (iptables -S), in both families, so that a conflict
// changes nothing. Nothing here reads more than the network's own chains, so
// no records are kept.

func dnatChain(network string) string    { return "BR-DNAT-" + network }    // ≤ 23 characters
func hairpinChain(network string) string { return "BR-HAIRPIN-" + network } // ≤ 26 characters
func fwdPortChain(port string) string    { return "BRFW-" + port }          // ≤ 20 characters

// dnatHooks are the built-in nat chains that jump to BR-DNAT-NET, for local destinations only.
var dnatHooks = []string{"PREROUTING", "OUTPUT"}

func dnatJump(network string) []string {
	return []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", dnatChain(network)}
}

// family4 returns 4 or 6, the iptables family of a forward.
func (fw Forward) family() int {
	if fw.is4() {
		return 4
	}
	return 6
}

// fwdSpecs is the content of BRFW-PORT in this family.
func (f *iptFamily) fwdSpecs(l []Forward) [][]string {
	var out [][]string
	for _, fw := range l {
		if fw.family() != f.family {
			continue
		}
		var r []string
		if fw.HostIP.IsValid() {
			r = append(r, "-d", fw.HostIP.String())
		}
		r = append(r, "-p", fw.Proto, "-m", fw.Proto, "--dport", strconv.Itoa(int(fw.HostPort)),
			"-j", "DNAT", "--to-destination", netip.AddrPortFrom(fw.GuestIP, fw.GuestPort).String())
		out = append(out, r)
	}
	return out
}

// hairpinSpecs is the content of BR-HAIRPIN-NET in this family (hairpinPlan).
func (f *iptFamily) hairpinSpecs(bridge string, subnets []netip.Prefix) [][]string {
	return f.specs("", hairpinPlan(bridge, subnets), chainPostrouting, false)
}

// natRules returns `iptables -t nat -S` as the fields of each -A line.
func (f *iptFamily) natRules() ([][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, f.cmd, "--wait", "10", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -t nat -S: %w: %s", f.cmd, err, strings.TrimSpace(string(out)))
	}
	var l [][]string
	for _, line := range strings.Split(string(out), "\n") {
		if fs := strings.Fields(line); len(fs) > 2 && fs[0] == "-A" {
			l = append(l, fs[1:])
		}
	}
	return l, nil
}

// published returns the published ports of the network in this family, by
// guest port, and the ports in the order of their jumps.
func (f *iptFamily) published(network string) (map[string][]Forward, []string, error) {
	rules, err := f.natRules()
	if err != nil {
		return nil, nil, err
	}
	owner := map[string]string{} // port chain → port
	var ports []string
	for _, r := range rules {
		if r[0] == dnatChain(network) && len(r) == 3 && r[1] == "-j" && strings.HasPrefix(r[2], "BRFW-") {
			port := strings.TrimPrefix(r[2], "BRFW-")
			owner[r[2]] = port
			ports = append(ports, port)
		}
	}
	out := map[string][]Forward{}
	for _, r := range rules {
		if port, ok := owner[r[0]]; ok {
			fw, err := parseDNATRule(r[1:])
			if err != nil {
				return nil, nil, fmt.Errorf("%s: chain %s: %w", f.cmd, r[0], err)
			}
			out[port] = append(out[port], fw)
		}
	}
	return out, ports, nil
}

// parseDNATRule reads back a rule of fwdSpecs as iptables -S prints it:
// [-d 192.0.2.1/32] -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80.
func parseDNATRule(f []string) (Forward, error) {
	var fw Forward
	for i := 0; i+1 < len(f); i++ {
		v := f[i+1]
		switch f[i] {
		case "-d":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.IsSingleIP() {
				return fw, fmt.Errorf("unexpected destination %q", v)
			}
			fw.HostIP = p.Addr()
		case "-p":
			fw.Proto = v
		case "--dport":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return fw, fmt.Errorf("unexpected port %q", v)
			}
			fw.HostPort = uint16(n)
		case "--to-destination":
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return fw, fmt.Errorf("unexpected DNAT target %q", v)
			}
			fw.GuestIP, fw.GuestPort = ap.Addr(), ap.Port()
		}
	}
	if fw.Proto == "" || fw.HostPort == 0 || !fw.GuestIP.IsValid() {
		return fw, fmt.Errorf("unexpected rule %q", strings.Join(f, " "))
	}
	return fw, nil
}

// ensureForwards installs port fw.Port's published ports of this family (specs
// non-empty): the hairpin chain, the dispatch chain, the port's chain
// (replaced atomically), then the jumps.
func (f *iptFamily) ensureForwards(fw Forwards, specs [][]string) error {
	dc, pc := dnatChain(fw.Network), fwdPortChain(fw.Port)
	if err := f.apply(ourChain{table: "nat", name: hairpinChain(fw.Network), rules: f.hairpinSpecs(fw.Bridge, fw.Subnets), from: []string{builtinPost}}); err != nil {
		return err
	}
	if ok, err := f.chainExists("nat", dc); err != nil {
		return err
	} else if !ok {
		if err := f.ipt.NewChain("nat", dc); err != nil {
			if ok, _ := f.chainExists("nat", dc); !ok { // else created meanwhile by a concurrent call
				return fmt.Errorf("%s: create chain %s: %w", f.cmd, dc, err)
			}
		}
	}
	if err := f.apply(ourChain{table: "nat", name: pc, rules: specs}); err != nil {
		return err
	}
	if ok, err := f.ipt.Exists("nat", dc, "-j", pc); err != nil {
		return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, dc, pc, err)
	} else if !ok {
		if err := f.ipt.Append("nat", dc, "-j", pc); err != nil {
			return fmt.Errorf("%s: add jump %s -> %s: %w", f.cmd, dc, pc, err)
		}
	}
	for _, h := range dnatHooks {
		if ok, err := f.ipt.Exists("nat", h, dnatJump(fw.Network)...); err != nil {
			return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, h, dc, err)
		} else if !ok {
			if err := f.ipt.Insert("nat", h, 1, dnatJump(fw.Network)...); err != nil {
				return fmt.Errorf("%s: insert jump %s -> %s: %w", f.cmd, h, dc, err)
			}
		}
	}
	return nil
}

// removeForwards removes a port's published ports of this family, and the
// network's chains when it was the last port with some. Absent pieces are fine.
func (f *iptFamily) removeForwards(network, port string) error {
	dc, pc := dnatChain(network), fwdPortChain(port)
	pcExists, err := f.chainExists("nat", pc)
	if err != nil {
		return err
	}
	// No port chain, no jump to it: iptables refuses dangling jumps.
	if ok, err := f.chainExists("nat", dc); err != nil {
		return err
	} else if ok && pcExists {
		for {
			ok, err := f.ipt.Exists("nat", dc, "-j", pc)
			if err != nil {
				return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, dc, pc, err)
			}
			if !ok {
				break
			}
			if err := f.ipt.Delete("nat", dc, "-j", pc); err != nil {
				return fmt.Errorf("%s: delete jump %s -> %s: %w", f.cmd, dc, pc, err)
			}
		}
	}
	if pcExists {
		if err := f.ipt.ClearAndDeleteChain("nat", pc); err != nil {
			return fmt.Errorf("%s: delete chain %s: %w", f.cmd, pc, err)
		}
	}
	return f.removeForwardChainsIfUnused(network)
}

// removeForwardChainsIfUnused deletes BR-DNAT-NET (and its hooks) when no
// port is jumped from it any more, and then BR-HAIRPIN-NET.
func (f *iptFamily) removeForwardChainsIfUnused(network string) error {
	dc := dnatChain(network)
	if lines, ok, err := f.listIfExists("nat", dc); err != nil {
		return err
	} else if ok {
		for _, l := range lines {
			if strings.HasPrefix(l, "-A ") {
				return nil // other ports still publish
			}
		}
		for _, h := range dnatHooks {
			for {
				ok, err := f.ipt.Exists("nat", h, dnatJump(network)...)
				if err != nil {
					return fmt.Errorf("%s: check jump %s -> %s: %w", f.cmd, h, dc, err)
				}
				if !ok {
					break
				}
				if err := f.ipt.Delete("nat", h, dnatJump(network)...); err != nil {
					return fmt.Errorf("%s: delete jump %s -> %s: %w", f.cmd, h, dc, err)
				}
			}
		}
		if err := f.ipt.ClearAndDeleteChain("nat", dc); err != nil {
			return fmt.Errorf("%s: delete chain %s: %w", f.cmd, dc, err)
		}
	}
	return f.removeChain("nat", hairpinChain(network), builtinPost)
}

// removeAllForwards removes every published port of the network in this family.
func (f *iptFamily) removeAllForwards(network string) error {
	dc := dnatChain(network)
	if lines, ok, err := f.listIfExists("nat", dc); err != nil {
		return err
	} else if ok {
		for _, l := range lines {
			if fs := strings.Fields(l); len(fs) == 4 && fs[0] == "-A" && fs[2] == "-j" && strings.HasPrefix(fs[3], "BRFW-") {
				if err := f.removeForwards(network, strings.TrimPrefix(fs[3], "BRFW-")); err != nil {
					return err
				}
			}
		}
	}
	return f.removeForwardChainsIfUnused(network)
}

// listForwards prints the network's published-port chains and jumps as
// iptables command lines, and returns its published ports by guest port.
func (f *iptFamily) listForwards(network string) ([]string, map[string][]Forward, error) {
	rules, err := f.natRules()
	if err != nil {
		return nil, nil, err
	}
	dc, hc := dnatChain(network), hairpinChain(network)
	jumpDNAT := strings.Join(dnatJump(network), " ")
	ports := map[string]bool{}
	for _, r := range rules {
		if r[0] == dc && len(r) == 3 && r[1] == "-j" {
			ports[r[2]] = true
		}
	}
	var out []string
	for _, r := range rules {
		rest := strings.Join(r[1:], " ")
		if r[0] == dc || r[0] == hc || ports[r[0]] ||
			(rest == jumpDNAT && (r[0] == "PREROUTING" || r[0] == "OUTPUT")) || (r[0] == builtinPost && rest == "-j "+hc) {
			out = append(out, fmt.Sprintf("%s -t nat -A %s %s", f.cmd, r[0], rest))
		}
	}
	pub, _, err := f.published(network)
	if err != nil {
		return nil, nil, err
	}
	return out, pub, nil
}

// EnsureForwards makes the port's published ports fw.Forwards, holding the
// network's fwd lock (iptables_records.go).
func (b *iptBackend) EnsureForwards(fw Forwards) error {
	if err := fw.validate(); err != nil {
		return err
	}
	if b.v6 == nil {
		for _, x := range fw.Forwards {
			if x.family() == 6 {
				return errorf("iptables: port %s: published port %s needs ip6tables (install the Debian package iptables)", fw.Port, x.published())
			}
		}
	}
	return b.fwdLocked(fw.Network, func() error { return b.ensureForwards(fw) })
}

func (b *iptBackend) ensureForwards(fw Forwards) error {
	// Ownership first, in every family, so that a conflict changes nothing.
	for _, f := range b.families() {
		pub, _, err := f.published(fw.Network)
		if err != nil {
			return errorf("iptables: port %s: %w", fw.Port, err)
		}
		taken := map[fwdKey]string{}
		for port, l := range pub {
			if port != fw.Port {
				for _, x := range l {
					taken[x.key()] = port
				}
			}
		}
		for _, x := range fw.Forwards {
			if owner, ok := taken[x.key()]; ok && x.family() == f.family {
				return conflict(fw.Port, x, owner)
			}
		}
	}
	for _, f := range b.families() {
		var err error
		if specs := f.fwdSpecs(fw.Forwards); len(specs) > 0 {
			err = f.ensureForwards(fw, specs)
		} else {
			err = f.removeForwards(fw.Network, fw.Port)
		}
		if err != nil {
			return errorf("iptables: port %s: %w", fw.Port, err)
		}
	}
	return nil
}

func (b *iptBackend) RemoveForwards(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	return b.fwdLocked(network, func() error {
		for _, f := range b.families() {
			if err := f.removeForwards(network, port); err != nil {
				return errorf("iptables: port %s: %w", port, err)
			}
		}
		return nil
	})
}

// listIfExists lists chain's rules (iptables -S), and reports false when
// the chain does not exist.
func (f *iptFamily) listIfExists(table, chain string) ([]string, bool, error) {
	ok, err := f.chainExists(table, chain)
	if err != nil || !ok {
		return nil, false, err
	}
	lines, err := f.ipt.List(table, chain)
	if err != nil {
		return nil, false, fmt.Errorf("%s: list %s: %w", f.cmd, chain, err)
	}
	return lines, true, nil
}
