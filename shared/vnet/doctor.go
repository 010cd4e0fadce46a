package vnet

import (
	"fmt"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
)

// Finding is one reason why a network's guests may be cut off, and what to
// do about it (network-virtual doctor).
type Finding struct {
	Network string `json:"network"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

func (f Finding) String() string { return "network " + f.Network + ": " + f.Problem + "; " + f.Fix }

// Doctor explains why the guests of network n may be cut off: the network
// not running or not as Start left it (Status' problems), forwarding turned
// off, and what is not ours but drops the network's traffic: a base chain of
// another table on a hook the network's traffic passes (a host firewall with
// policy drop on forward; an accept in brouter's table does not override a
// drop elsewhere), iptables-legacy's FORWARD policy DROP (Docker's) that
// nothing of brouter's answers, br_netfilter sending frames between guests
// through such a chain. It reads; it changes nothing. No finding: nothing
// wrong that brouter can see.
func (m *Manager) Doctor(n *config.Network) ([]Finding, error) {
	st, err := m.Status(n)
	if err != nil {
		return nil, err
	}
	if !st.Running {
		return []Finding{{n.Name, "not running", fmt.Sprintf("start it: network-virtual start net=%s", n.Name)}}, nil
	}
	var out []Finding
	for _, p := range st.Problems {
		what, fix := splitFix(p)
		out = append(out, Finding{n.Name, what, fix})
	}
	if n.Mode == config.ModeBridge {
		return out, nil // not routed by brouter: forwarding and filters are the host's
	}
	forwards := n.Mode != config.ModeIsolated
	if v4, v6 := link.Forwarding(); forwards && (!v4 || n.Gateway6.IsValid() && !v6) {
		key := "net.ipv4.ip_forward"
		if v4 {
			key = "net.ipv6.conf.all.forwarding"
		}
		out = append(out, Finding{n.Name, key + " is 0: the host forwards nothing for the guests",
			fmt.Sprintf("network-virtual start net=%s sets it to 1 again; find what turned it off (a file in /etc/sysctl.d, another network tool)", n.Name)})
	}
	chains, err := firewall.ForeignBaseChains()
	if err != nil {
		return nil, err
	}
	for _, c := range chains {
		if f, ok := foreignFinding(n, c, forwards); ok {
			out = append(out, f)
		}
	}
	legacy, err := firewall.LegacyForwardPolicy()
	if err != nil {
		return nil, err
	}
	for _, l := range legacy {
		if forwards && l.PolicyDrop && !l.ReachesBrouter {
			out = append(out, Finding{n.Name, l.Command + " (legacy) filter FORWARD has policy DROP and nothing in it jumps to brouter's chains: forwarded guest traffic is dropped",
				fmt.Sprintf("network-virtual start net=%s installs brouter's accepts there (its Docker compatibility); or %s -I FORWARD -i %s -j ACCEPT and -o %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", n.Name, l.Command, n.Bridge, n.Bridge)})
		}
	}
	return out, nil
}

// foreignFinding says whether foreign base chain c drops traffic of network
// n that brouter's own rules accept.
func foreignFinding(n *config.Network, c firewall.ForeignChain, forwards bool) (Finding, bool) {
	if !c.Drops() {
		return Finding{}, false
	}
	v6 := n.Gateway6.IsValid()
	switch c.Family {
	case "ip", "inet":
	case "ip6":
		if !v6 {
			return Finding{}, false
		}
	case "bridge":
		if n.Bridge == "" || c.Hook != "forward" && c.Hook != "input" {
			return Finding{}, false
		}
	default:
		return Finding{}, false
	}
	var what string
	switch c.Hook {
	case "forward":
		what = "traffic forwarded to and from the guests"
		if c.Family == "bridge" {
			what = "frames between guests on " + n.Bridge
		} else if !forwards {
			return Finding{}, false
		} else if link.BridgeNetfilter() {
			what += " (and, with br_netfilter's bridge-nf-call-iptables = 1, frames between guests)"
		}
	case "input":
		if n.DHCP == nil {
			return Finding{}, false
		}
		what = "DHCP and DNS requests of the guests to the host"
	case "prerouting":
		what = "everything the guests send"
	default:
		return Finding{}, false
	}
	if n.Bridge != "" && c.AcceptsAny(n.Bridge) || n.Bridge == "" && c.AcceptsAny() {
		return Finding{}, false
	}
	why := "has policy drop"
	if !c.PolicyDrop {
		why = "drops every packet it does not accept before"
	}
	iface := n.Bridge
	if iface == "" {
		iface = "the guests' ports"
	}
	return Finding{n.Name,
		fmt.Sprintf("%s %s and accepts nothing of %s: it drops %s, whatever brouter's own table accepts", c, why, iface, what),
		fmt.Sprintf(`let the network through in that chain, before its drop: iifname "%s" accept, and oifname "%s" ct state established,related accept (firewalld: put %s in the trusted zone); or remove the chain if nothing needs it`, iface, iface, iface)}, true
}

// splitFix splits a Status problem line "what; what to do" at its last "; ".
func splitFix(p string) (string, string) {
	if i := strings.LastIndex(p, "; "); i > 0 {
		return p[:i], p[i+2:]
	}
	return p, "see network-virtual status net=NAME"
}
