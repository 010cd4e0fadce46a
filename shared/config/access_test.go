package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestAllowLists(t *testing.T) {
	c, err := Parse([]byte(`
[network.lab]
allow_users = ["alice", 1000, "1001", "svc.web", "MACHINE$"]
allow_groups = ["kvm", 4242]
[network.closed]
bridge = "brclosed"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	lab := c.Networks["lab"]
	if want := []Principal{"alice", "1000", "1001", "svc.web", "MACHINE$"}; !reflect.DeepEqual(lab.AllowUsers, want) {
		t.Errorf("allow_users = %q, want %q", lab.AllowUsers, want)
	}
	if want := []Principal{"kvm", "4242"}; !reflect.DeepEqual(lab.AllowGroups, want) {
		t.Errorf("allow_groups = %q, want %q", lab.AllowGroups, want)
	}
	if cl := c.Networks["closed"]; cl.AllowUsers != nil || cl.AllowGroups != nil {
		t.Errorf("a network without allow lists has %q %q, want none (root only)", cl.AllowUsers, cl.AllowGroups)
	}
	// Select (what every hook uses) keeps them.
	n, err := c.Select("lab", nil)
	if err != nil || len(n.AllowUsers) != 5 || len(n.AllowGroups) != 2 {
		t.Errorf("Select(lab) = %+v, %v: want the allow lists", n, err)
	}
}

func TestAllowListsBad(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{`allow_users = ["-rf"]`, `network.lab.allow_users[0] = "-rf": want a name`},
		{`allow_users = ["al ice"]`, `allow_users[0] = "al ice"`},
		{`allow_users = [""]`, `allow_users[0] = ""`},
		{`allow_users = ["../etc"]`, `allow_users[0] = "../etc"`},
		{`allow_groups = [-1]`, `allow_groups`},
		{`allow_groups = [4294967295]`, `allow_groups`},
		{`allow_groups = [true]`, `allow_groups`},
		{`allow_user = ["alice"]`, `unknown key network.lab.allow_user`},
	} {
		_, err := Parse([]byte("[network.lab]\n"+tc.toml+"\n"), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line containing %q", tc.toml, err, tc.want)
		}
	}
}

func TestPrincipalID(t *testing.T) {
	for s, want := range map[string]bool{"0": true, "1000": true, "4294967294": true, "4294967295": false, "+1": false, "-1": false, "1e3": false, "alice": false, "": false, "00000000001": false} {
		if _, ok := Principal(s).ID(); ok != want {
			t.Errorf("Principal(%q).ID() ok = %v, want %v", s, ok, want)
		}
	}
}
