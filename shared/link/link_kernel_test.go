package link

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// DeleteAll deletes exactly the named links (a veth with its peer, an ifb),
// skips missing names, and leaves every other link, whatever its group.
func TestDeleteAll(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "link")
	ns.Exec(t, "ip", "link", "add", "vp1", "type", "veth", "peer", "name", "vp1g")
	ns.Exec(t, "ip", "link", "add", "ifb1", "type", "ifb")
	ns.Exec(t, "ip", "link", "add", "keep1", "type", "veth", "peer", "name", "keep1g")
	ns.Exec(t, "ip", "link", "add", "keep2", "type", "ifb")
	ns.Exec(t, "ip", "link", "set", "keep2", "group", "7")
	if err := ns.Do(func() error { return DeleteAll("vp1", "ifb1", "missing0") }); err != nil {
		t.Fatal(err)
	}
	links := ns.Exec(t, "ip", "-br", "link")
	for _, gone := range []string{"vp1", "vp1g", "ifb1"} {
		if strings.Contains(links, gone+" ") || strings.Contains(links, gone+"@") {
			t.Errorf("%s still there:\n%s", gone, links)
		}
	}
	for _, kept := range []string{"keep1", "keep2", "lo"} {
		if !strings.Contains(links, kept) {
			t.Errorf("%s was deleted:\n%s", kept, links)
		}
	}
	// One name, and nothing at all, work too.
	if err := ns.Do(func() error { return DeleteAll("keep1") }); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { return DeleteAll("keep1", "missing0") }); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { _, err := Get("keep1"); return err }); !errors.Is(err, ErrNotFound) {
		t.Errorf("keep1 after DeleteAll: %v", err)
	}
}

// Addrs and HasAddr give exactly one link's addresses (IPv4, IPv6, a
// point-to-point one by its local side), none of another link's.
func TestAddrsOfOneLink(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "link")
	ns.Exec(t, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0")
	ns.Exec(t, "ip", "link", "set", "a0", "up")
	ns.Exec(t, "ip", "addr", "add", "10.1.0.1/24", "dev", "a0")
	ns.Exec(t, "ip", "addr", "add", "10.2.0.1", "peer", "10.2.0.2/32", "dev", "a0")
	ns.Exec(t, "ip", "addr", "add", "fd00:1::1/64", "dev", "a0", "nodad")
	ns.Exec(t, "ip", "addr", "add", "10.3.0.1/24", "dev", "b0")
	var a0, b0 []netip.Prefix
	var has, hasNot bool
	err := ns.Do(func() error {
		for _, x := range []struct {
			name string
			out  *[]netip.Prefix
		}{{"a0", &a0}, {"b0", &b0}} {
			l, err := Get(x.name)
			if err != nil {
				return err
			}
			if *x.out, err = Addrs(l); err != nil {
				return err
			}
			if x.name == "a0" {
				if has, err = HasAddr(l, netip.MustParsePrefix("fd00:1::1/64")); err != nil {
					return err
				}
				if hasNot, err = HasAddr(l, netip.MustParsePrefix("10.3.0.1/24")); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"10.1.0.1/24": true, "10.2.0.1/32": true, "fd00:1::1/64": true}
	if len(a0) != len(want) {
		t.Errorf("a0: %v, want %v", a0, want)
	}
	for _, p := range a0 {
		if !want[p.String()] {
			t.Errorf("a0: %v, want %v", a0, want)
		}
	}
	if len(b0) != 1 || b0[0].String() != "10.3.0.1/24" {
		t.Errorf("b0: %v, want [10.3.0.1/24]", b0)
	}
	if !has || hasNot {
		t.Errorf("HasAddr(a0): its own %v (want true), b0's %v (want false)", has, hasNot)
	}
}

// Addrs asks the kernel for the link's addresses only: with 40 other links
// carrying addresses, it reads as many messages as the link has addresses
// (an unfiltered dump's cost grows with the links on the host).
func TestAddrsReadsOneLinksOnly(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "link")
	var batch strings.Builder
	for i := range 40 {
		fmt.Fprintf(&batch, "link add o%d type veth peer name p%d\naddr add 10.9.%d.1/24 dev o%d\n", i, i, i, i)
	}
	batch.WriteString("link add a0 type veth peer name b0\naddr add 10.1.0.1/24 dev a0\n")
	cmd := ns.Cmd("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v: %s", err, out)
	}
	var got []netip.Prefix
	before := addrMsgs.Load()
	if err := ns.Do(func() error {
		l, err := Get("a0")
		if err == nil {
			got, err = Addrs(l)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != "10.1.0.1/24" {
		t.Errorf("Addrs(a0) = %v, want [10.1.0.1/24]", got)
	}
	if n := addrMsgs.Load() - before; n != 1 {
		t.Errorf("Addrs(a0) read %d address messages, want 1 (its own)", n)
	}
}
