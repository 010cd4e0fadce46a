package firewall

import (
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"

	gnftables "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Inspection of what is not ours, for `network-virtual doctor`: base chains
// of other tables (a host firewall, firewalld, iptables-nft's tables) on the
// hooks a network's traffic passes. An accept in brouter's own table does not
// stop another base chain on the same hook from dropping the packet, so a
// foreign chain with policy drop, or with a rule that drops everything, cuts
// guests off unless it lets the network's traffic through itself (a rule
// accepting the bridge, or a jump to a brouter chain).
//
// This reads; it changes nothing. It is a mechanism: which hooks matter for
// a network is vnet's policy (vnet/doctor.go).

// ForeignChain is a base chain of a table that is not brouter's.
type ForeignChain struct {
	Family   string `json:"family"` // "ip", "ip6", "inet", "bridge", "arp", "netdev"
	Table    string `json:"table"`
	Chain    string `json:"chain"`
	Hook     string `json:"hook"` // "prerouting", "input", "forward", "output", "postrouting"
	Priority int    `json:"priority"`
	// PolicyDrop: the chain's policy is drop.
	PolicyDrop bool `json:"policy_drop"`
	// DropsAll: a rule drops (or rejects) every packet that reaches it.
	DropsAll bool `json:"drops_all"`
	// Accepts lists the interface names that a rule accepts by iifname or
	// oifname (in this chain or a chain it jumps to), and the brouter
	// chains it jumps to (BR-…, BROUTER-…): what it lets through itself.
	Accepts []string `json:"accepts,omitempty"`
}

// Drops reports whether the chain drops what it does not accept itself.
func (c ForeignChain) Drops() bool { return c.PolicyDrop || c.DropsAll }

// AcceptsAny reports whether the chain lets through traffic of one of the
// interfaces, or jumps to one of brouter's chains.
func (c ForeignChain) AcceptsAny(ifaces ...string) bool {
	for _, a := range c.Accepts {
		if strings.HasPrefix(a, "BR-") || strings.HasPrefix(a, "BROUTER-") {
			return true
		}
		for _, i := range ifaces {
			if a == i {
				return true
			}
		}
	}
	return false
}

func (c ForeignChain) String() string {
	return fmt.Sprintf("table %s %s chain %s (hook %s, priority %d)", c.Family, c.Table, c.Chain, c.Hook, c.Priority)
}

// ForeignBaseChains lists the nf_tables base chains of every table that is
// not brouter's ("brouter-…"), with what they drop and accept. iptables-nft's
// tables are nf_tables tables and are listed too; iptables-legacy's are not
// (see LegacyForwardPolicy).
func ForeignBaseChains() ([]ForeignChain, error) {
	conn, err := gnftables.New()
	if err != nil {
		return nil, errorf("inspect: netlink: %w", err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, errorf("inspect: list chains: %w", err)
	}
	byTable := map[string][]*gnftables.Chain{}
	for _, c := range chains {
		k := familyName(c.Table.Family) + " " + c.Table.Name
		byTable[k] = append(byTable[k], c)
	}
	var out []ForeignChain
	for _, c := range chains {
		if c.Hooknum == nil || strings.HasPrefix(c.Table.Name, "brouter-") {
			continue
		}
		fc := ForeignChain{Family: familyName(c.Table.Family), Table: c.Table.Name, Chain: c.Name, Hook: hookName(c.Table.Family, *c.Hooknum)}
		if c.Priority != nil {
			fc.Priority = int(*c.Priority)
		}
		fc.PolicyDrop = c.Policy != nil && *c.Policy == gnftables.ChainPolicyDrop
		w := walker{conn: conn, chains: byTable[fc.Family+" "+fc.Table], seen: map[string]bool{}}
		if err := w.walk(c, &fc, 0); err != nil {
			return nil, errorf("inspect: %s: %w", fc, err)
		}
		sort.Strings(fc.Accepts)
		out = append(out, fc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// walker follows a chain's rules and the regular chains it jumps to (up to
// a few levels, as iptables' FORWARD → DOCKER-USER → BR-FWD-NET).
type walker struct {
	conn   *gnftables.Conn
	chains []*gnftables.Chain
	seen   map[string]bool
}

func (w *walker) walk(c *gnftables.Chain, fc *ForeignChain, depth int) error {
	if depth > 4 || w.seen[c.Name] {
		return nil
	}
	w.seen[c.Name] = true
	rules, err := w.conn.GetRules(c.Table, c)
	if err != nil {
		return err
	}
	for _, r := range rules {
		var ifname string
		var matches int
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Counter:
			case *expr.Cmp:
				matches++
				if e.Op == expr.CmpOpEq {
					ifname = string(bytes.TrimRight(e.Data, "\x00"))
				}
			case *expr.Verdict:
				switch e.Kind {
				case expr.VerdictAccept:
					if ifname != "" {
						fc.Accepts = appendNew(fc.Accepts, ifname)
					}
				case expr.VerdictDrop:
					if matches == 0 && depth == 0 {
						fc.DropsAll = true
					}
				case expr.VerdictJump, expr.VerdictGoto:
					if strings.HasPrefix(e.Chain, "BR-") || strings.HasPrefix(e.Chain, "BROUTER-") {
						fc.Accepts = appendNew(fc.Accepts, e.Chain)
						continue
					}
					for _, next := range w.chains {
						if next.Name == e.Chain {
							if err := w.walk(next, fc, depth+1); err != nil {
								return err
							}
						}
					}
				}
			case *expr.Reject:
				if matches == 0 && depth == 0 {
					fc.DropsAll = true
				}
			default:
				matches++
			}
		}
	}
	return nil
}

func appendNew(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

var (
	familyNames = map[gnftables.TableFamily]string{
		gnftables.TableFamilyIPv4: "ip", gnftables.TableFamilyIPv6: "ip6", gnftables.TableFamilyINet: "inet",
		gnftables.TableFamilyBridge: "bridge", gnftables.TableFamilyARP: "arp", gnftables.TableFamilyNetdev: "netdev",
	}
	// hookNames by family: the inet hooks serve ip, ip6, inet and bridge.
	inetHooks = map[gnftables.ChainHook]string{
		unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input", unix.NF_INET_FORWARD: "forward",
		unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting",
	}
	hookNames = map[gnftables.TableFamily]map[gnftables.ChainHook]string{
		gnftables.TableFamilyNetdev: {unix.NF_NETDEV_INGRESS: "ingress", unix.NF_NETDEV_EGRESS: "egress"},
		gnftables.TableFamilyARP:    {0: "input", 1: "output"},
	}
)

func familyName(f gnftables.TableFamily) string {
	if n, ok := familyNames[f]; ok {
		return n
	}
	return fmt.Sprintf("family%d", f)
}

func hookName(f gnftables.TableFamily, h gnftables.ChainHook) string {
	names, ok := hookNames[f]
	if !ok {
		names = inetHooks
	}
	if n, ok := names[h]; ok {
		return n
	}
	return fmt.Sprintf("hook%d", h)
}

// LegacyForwardPolicy reports, for each iptables family whose tool is
// iptables-legacy (its rules are not nf_tables tables and ForeignBaseChains
// does not see them), whether filter FORWARD's policy is DROP and whether
// FORWARD jumps to one of brouter's chains (directly or through DOCKER-USER).
// Families using iptables-nft are left out: ForeignBaseChains covers them.
func LegacyForwardPolicy() ([]LegacyForward, error) {
	var out []LegacyForward
	for _, fam := range []int{4, 6} {
		f, err := newIPTFamily(fam)
		if err != nil {
			continue // no such tool: nothing of it can drop
		}
		if !f.legacy() {
			continue
		}
		lines, err := f.ipt.List("filter", builtinFwd)
		if err != nil {
			return nil, errorf("inspect: %s: list FORWARD: %w", f.cmd, err)
		}
		lf := LegacyForward{Command: f.cmd}
		for _, l := range lines {
			if strings.HasPrefix(l, "-P FORWARD DROP") {
				lf.PolicyDrop = true
			}
			if strings.Contains(l, " -j BR-") || strings.Contains(l, " -j "+dockerUser) && f.jumpsToOurs(dockerUser) {
				lf.ReachesBrouter = true
			}
		}
		out = append(out, lf)
	}
	return out, nil
}

// LegacyForward is what LegacyForwardPolicy reports of one iptables-legacy family.
type LegacyForward struct {
	Command        string `json:"command"` // "iptables" or "ip6tables"
	PolicyDrop     bool   `json:"policy_drop"`
	ReachesBrouter bool   `json:"reaches_brouter"`
}

func (f *iptFamily) jumpsToOurs(chain string) bool {
	lines, err := f.ipt.List("filter", chain)
	if err != nil {
		return false
	}
	for _, l := range lines {
		if strings.Contains(l, " -j BR-") {
			return true
		}
	}
	return false
}

// legacy reports whether the family's tool is iptables-legacy ("iptables
// v1.8.9 (legacy)"), whose rules live outside nf_tables.
func (f *iptFamily) legacy() bool {
	out, err := exec.Command(f.cmd, "--version").Output()
	return err == nil && strings.Contains(string(out), "(legacy)")
}

var (
	legacyOnce sync.Once
	legacyMode bool
)

// IPTablesLegacy reports whether the host's iptables is iptables-legacy, whose
// rules live outside nf_tables and send no notifications (looked up once).
func IPTablesLegacy() bool {
	legacyOnce.Do(func() {
		if f, err := newIPTFamily(4); err == nil {
			legacyMode = f.legacy()
		}
	})
	return legacyMode
}
