package firewall

import (
	"strings"
	"testing"
)

// The policy's rules as nft and iptables accept them: Ensure installs the
// whole plan (filters, jumps, ICMP types, port ranges, negated DNAT), Check
// finds it intact, a second Ensure changes nothing, dropping the policy
// removes the filter chains, and Remove restores the state before.
func TestKernelPolicy(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			inNewNetns(t)
			foreign(t)
			b := newBackend(t, kind)
			before := dump(t)
			r := policyNet()
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			first := dump(t)
			if kind == KindNftables {
				mustContain(t, first, "chain outgoing", "chain incoming", "jump outgoing", "ct status != dnat", "udp dport 5000-5010 accept")
			} else {
				mustContain(t, first, ":BR-OUT-lab", ":BR-INC-lab", "-A BR-FWD-lab -i brlab -j BR-OUT-lab",
					"-A BR-IN-lab -i brlab -j DROP", "-m conntrack ! --ctstate DNAT -j DROP", "--dport 5000:5010")
			}
			if p, err := b.Check(r); err != nil || len(p) > 0 {
				t.Errorf("Check = %q, %v", p, err)
			}
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if again := dump(t); again != first {
				t.Errorf("second Ensure changed the ruleset:\n%s\n---\n%s", first, again)
			}
			plain := r
			plain.Policy = Policy{}
			if err := b.Ensure(plain); err != nil {
				t.Fatal(err)
			}
			if s := dump(t); strings.Contains(s, "outgoing") || strings.Contains(s, "BR-OUT-lab") || strings.Contains(s, "BR-INC-lab") {
				t.Errorf("the filter chains outlive the policy:\n%s", s)
			}
			if p, err := b.Check(plain); err != nil || len(p) > 0 {
				t.Errorf("Check without policy = %q, %v", p, err)
			}
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if err := b.Remove(r.Network); err != nil {
				t.Fatal(err)
			}
			if after := dump(t); after != before && strings.Contains(after, "lab") {
				t.Errorf("Remove left rules of the network:\n%s", after)
			}
		})
	}
}
