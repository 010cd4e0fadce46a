package nstest

import "strings"

var builtinChain = map[string]bool{"INPUT": true, "FORWARD": true, "OUTPUT": true, "PREROUTING": true, "POSTROUTING": true}

// WithoutEmptyBuiltins drops, from a dump (nstest.Dump) or iptables-save
// output, the built-in chains that have no rules and policy ACCEPT, and the
// xtables tables left empty by that: iptables-nft creates a table's built-in
// chains on first use and never removes them (with iptables-legacy they exist
// as soon as the table module is loaded), so they are no residue of ours.
func WithoutEmptyBuiltins(dump string) string {
	lines := strings.Split(dump, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		// nft: "\tchain FORWARD {" / "\t\ttype ... policy accept;" / "\t}"
		if name, ok := strings.CutPrefix(l, "\tchain "); ok && builtinChain[strings.TrimSuffix(name, " {")] &&
			i+2 < len(lines) && strings.HasSuffix(lines[i+1], "policy accept;") && lines[i+2] == "\t}" {
			i += 2
			continue
		}
		// iptables-save: ":FORWARD ACCEPT" (counters already gone in a dump)
		if strings.HasPrefix(l, ":") {
			f := strings.Fields(l)
			if len(f) >= 2 && builtinChain[f[0][1:]] && f[1] == "ACCEPT" {
				continue
			}
		}
		out = append(out, l)
	}
	// Drop tables that are now empty: "table ip nat {" + "}" (any family) and "*nat" + "COMMIT".
	var res []string
	for i := 0; i < len(out); i++ {
		if i+1 < len(out) {
			t, n := out[i], out[i+1]
			if strings.HasPrefix(t, "table ") && strings.HasSuffix(t, " {") && n == "}" {
				i++
				continue
			}
			if strings.HasPrefix(t, "*") && n == "COMMIT" {
				i++
				continue
			}
		}
		res = append(res, out[i])
	}
	return strings.Join(res, "\n")
}
