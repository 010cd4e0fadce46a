package link

import (
	"errors"
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
