package vnet

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"

	"github.com/brouter/brouter/shared/config"
)

// Caller is who runs a privileged hook (the bridge helper): the real user
// id, as the kernel gives it, and every group of the process (the real group
// and the supplementary ones). Never anything the caller can say itself.
type Caller struct {
	UID    uint32
	Groups []uint32
}

// Accounts resolves user and group names for Authorize; tests replace it.
type Accounts struct {
	// UserID returns the uid of a user name.
	UserID func(name string) (uint32, error)
	// GroupID returns the gid of a group name.
	GroupID func(name string) (uint32, error)
	// UserName returns the name of a uid, for messages ("" when unknown).
	UserName func(uid uint32) string
}

// SystemAccounts looks names up as the C library would without NSS modules:
// in /etc/passwd and /etc/group (Go's os/user without cgo).
var SystemAccounts = Accounts{
	UserID: func(name string) (uint32, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, err
		}
		return parseID(u.Uid)
	},
	GroupID: func(name string) (uint32, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return 0, err
		}
		return parseID(g.Gid)
	},
	UserName: func(uid uint32) string {
		if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
			return u.Username
		}
		return ""
	},
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// ErrAccessDenied is what Authorize's refusals wrap.
var ErrAccessDenied = errors.New("access denied")

// Authorize decides whether the caller may attach guests to network n
// through the bridge helper: root always, a user listed in the network's
// allow_users (by name or uid), or a member of a group in allow_groups (by
// name or gid); nobody else. A name that does not resolve matches nobody.
// The refusal names the user, the network and where to allow it.
func (m *Manager) Authorize(n *config.Network, c Caller) error {
	acc := SystemAccounts
	if m.Accounts != nil {
		acc = *m.Accounts
	}
	return authorize(n, m.Config.Path, c, acc)
}

func authorize(n *config.Network, path string, c Caller, acc Accounts) error {
	if c.UID == 0 {
		return nil
	}
	if anyID(n.AllowUsers, acc.UserID, func(id uint32) bool { return id == c.UID }) ||
		anyID(n.AllowGroups, acc.GroupID, func(id uint32) bool { return slices.Contains(c.Groups, id) }) {
		return nil
	}
	who := strconv.FormatUint(uint64(c.UID), 10)
	entry := who
	if name := acc.UserName(c.UID); name != "" {
		who, entry = name+" (uid "+who+")", strconv.Quote(name)
	} else {
		who = "uid " + who
	}
	where := path
	if where == "" {
		where = "the host config"
	}
	return fmt.Errorf("vnet: user %s may not attach guests to network %s: %w; to allow it, add %s to allow_users (or one of the user's groups to allow_groups) in [network.%s] of %s",
		who, n.Name, ErrAccessDenied, entry, n.Name, where)
}

// anyID reports whether the id of an entry (a numeric id, or a name that
// lookup resolves) is one match accepts.
func anyID(ps []config.Principal, lookup func(string) (uint32, error), match func(uint32) bool) bool {
	for _, p := range ps {
		id, ok := p.ID()
		if !ok {
			var err error
			if id, err = lookup(string(p)); err != nil {
				continue
			}
		}
		if match(id) {
			return true
		}
	}
	return false
}
