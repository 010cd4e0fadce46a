package e2e

import (
	"strings"
	"testing"
)

// TestStatusProblems: status exits 0 for an intact network and 1 (LSB:
// "dead but state exists"), naming the problem, once another tool has
// flushed brouter's rules or, with nftables, set iptables' FORWARD policy to
// DROP, which cuts the guests off; start again mends it and status is 0.
func TestStatusProblems(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{})
		w.writeConfig(netConfig("nat", backend))
		w.mustRun(0, "start")
		breakages := map[string][][]string{
			"nftables": {
				{"nft", "flush", "chain", "inet", "brouter-e2e", "forward"},
				{"nft", "delete", "table", "inet", "brouter-e2e"},
				{"iptables", "-P", "FORWARD", "DROP"},
			},
			"iptables": {
				{"iptables", "-F", "BR-FWD-e2e"},
				{"iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "BR-NAT-e2e"},
				{"ip6tables", "-D", "FORWARD", "-j", "BR-FWD-e2e"},
			},
		}[backend]
		for _, br := range breakages {
			if r := w.run("status"); r.code != 0 {
				t.Fatalf("control: status of an intact network: want exit 0, got:\n%s", r)
			}
			w.dom0.Exec(t, br...)
			r := w.run("status")
			if r.code != 1 || !strings.Contains(r.stdout, "problem:") {
				t.Errorf("after %q: status want exit 1 with a problem, got:\n%s", strings.Join(br, " "), r)
			} else {
				for _, l := range strings.Split(r.stdout, "\n") {
					if strings.Contains(l, "problem:") {
						t.Logf("after %q: %s", strings.Join(br, " "), strings.TrimSpace(l))
					}
				}
			}
			w.mustRun(0, "start")
		}
		if r := w.run("status"); r.code != 0 {
			t.Errorf("status after start mended it: want exit 0, got:\n%s", r)
		}
		w.dom0.Exec(t, "iptables", "-P", "FORWARD", "ACCEPT")
		w.mustRun(0, "stop")
	})
}
