package vnet

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/config"
)

// testAccounts: alice 1000 (groups: its own 1000 and kvm 108), bob 1001.
var testAccounts = Accounts{
	UserID: func(name string) (uint32, error) {
		if id, ok := map[string]uint32{"alice": 1000, "bob": 1001}[name]; ok {
			return id, nil
		}
		return 0, fmt.Errorf("unknown user %s", name)
	},
	GroupID: func(name string) (uint32, error) {
		if id, ok := map[string]uint32{"kvm": 108, "alice": 1000}[name]; ok {
			return id, nil
		}
		return 0, fmt.Errorf("unknown group %s", name)
	},
	UserName: func(uid uint32) string { return map[uint32]string{1000: "alice", 1001: "bob"}[uid] },
}

func TestAuthorize(t *testing.T) {
	alice := Caller{UID: 1000, Groups: []uint32{1000, 108}}
	bob := Caller{UID: 1001, Groups: []uint32{1001}}
	anon := Caller{UID: 70000, Groups: []uint32{70000}}
	root := Caller{UID: 0, Groups: []uint32{0}}
	for _, tc := range []struct {
		name          string
		users, groups []config.Principal
		c             Caller
		ok            bool
	}{
		{"root, no lists", nil, nil, root, true},
		{"user, no lists", nil, nil, alice, false},
		{"user by name", []config.Principal{"alice"}, nil, alice, true},
		{"other user by name", []config.Principal{"alice"}, nil, bob, false},
		{"user by uid", []config.Principal{"1001"}, nil, bob, true},
		{"uid without passwd entry", []config.Principal{"70000"}, nil, anon, true},
		{"unknown name matches nobody", []config.Principal{"mallory"}, nil, anon, false},
		{"group by name", nil, []config.Principal{"kvm"}, alice, true},
		{"group by name, not a member", nil, []config.Principal{"kvm"}, bob, false},
		{"group by gid", nil, []config.Principal{"70000"}, anon, true},
		{"a group named like a user is a group", nil, []config.Principal{"bob"}, bob, false},
	} {
		n := &config.Network{Name: "lab", AllowUsers: tc.users, AllowGroups: tc.groups}
		err := authorize(n, "/etc/brouter/brouter.toml", tc.c, testAccounts)
		if (err == nil) != tc.ok {
			t.Errorf("%s: authorize = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrAccessDenied) {
			t.Errorf("%s: %v does not wrap ErrAccessDenied", tc.name, err)
		}
	}
}

func TestAuthorizeMessage(t *testing.T) {
	n := &config.Network{Name: "lab", AllowUsers: []config.Principal{"alice"}}
	err := authorize(n, "/etc/brouter/brouter.toml", Caller{UID: 1001, Groups: []uint32{1001}}, testAccounts)
	msg := fmt.Sprint(err)
	for _, want := range []string{"user bob (uid 1001)", "network lab", `add "bob" to allow_users`, "[network.lab] of /etc/brouter/brouter.toml"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	err = authorize(n, "/etc/brouter/brouter.toml", Caller{UID: 70000}, testAccounts)
	if msg := fmt.Sprint(err); !strings.Contains(msg, "user uid 70000 ") || !strings.Contains(msg, "add 70000 to allow_users") {
		t.Errorf("refusal of a uid without a name: %q", msg)
	}
}
