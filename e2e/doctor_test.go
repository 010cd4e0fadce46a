package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDoctor: on a clean host doctor finds nothing and exits 0; a foreign
// table whose forward base chain has policy drop cuts the guests off (an
// accept in brouter's table does not override it), and doctor names that
// chain with a fix (exit 1); applying the fix it suggests lets the guest
// out again and doctor is quiet. IPv4 forwarding turned off is found too.
func TestDoctor(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true, guests: 1})
		w.writeConfig(netConfig("nat", backend))
		w.mustRun(0, "start")
		w.attach("br-e2e")
		g := w.guests[0]

		r := w.mustRun(0, "doctor")
		if !strings.Contains(r.stdout, "nothing wrong") {
			t.Errorf("clean host: want 'nothing wrong', got:\n%s", r)
		}
		mustPing(t, g.ns, "guest (control)", outsideIP)

		w.dom0.Exec(t, "nft", "add table inet hostfw")
		w.dom0.Exec(t, "nft", "add chain inet hostfw f { type filter hook forward priority 0; policy drop; }")
		mustNotPing(t, g.ns, "guest behind a foreign policy drop", outsideIP)
		r = w.mustRun(1, "doctor", "net=e2e")
		if !strings.Contains(r.stdout, "table inet hostfw chain f (hook forward") || !strings.Contains(r.stdout, `iifname "br-e2e" accept`) {
			t.Errorf("doctor does not name the foreign chain and its fix:\n%s", r)
		}
		r = w.mustRun(1, "--json", "doctor")
		var findings []map[string]string
		if err := json.Unmarshal([]byte(r.stdout), &findings); err != nil || len(findings) != 1 || findings[0]["network"] != "e2e" {
			t.Errorf("doctor --json: want one finding of network e2e, got %v (%v):\n%s", findings, err, r)
		}

		// The fix doctor suggests.
		w.dom0.Exec(t, "nft", `add rule inet hostfw f iifname "br-e2e" accept`)
		w.dom0.Exec(t, "nft", `add rule inet hostfw f oifname "br-e2e" ct state established,related accept`)
		mustPing(t, g.ns, "guest after the suggested fix", outsideIP)
		w.mustRun(0, "doctor")
		w.dom0.Exec(t, "nft", "delete table inet hostfw")

		w.dom0.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		mustNotPing(t, g.ns, "guest with forwarding off", outsideIP)
		r = w.mustRun(1, "doctor")
		if !strings.Contains(r.stdout, "net.ipv4.ip_forward is 0") {
			t.Errorf("doctor does not find forwarding off:\n%s", r)
		}
		w.mustRun(0, "start")
		w.mustRun(0, "doctor")
		w.mustRun(0, "stop")
	})
}
