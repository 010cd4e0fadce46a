package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Who may attach guests to a network through the privileged bridge helper
// (hooks/bridge-helper), which unprivileged users run: [network.NAME]
// allow_users and allow_groups. Root always may; nobody else unless listed.

// Principal is one allow_users or allow_groups entry as written: a name
// ("alice", "kvm") or a numeric id, given as a TOML integer (1000) or a
// string of digits ("1000").
type Principal string

// UnmarshalTOML takes a string or an integer; validation (with the key's
// name in its message) comes later, in validatePrincipals.
func (p *Principal) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*p = Principal(x)
	case int64:
		*p = Principal(strconv.FormatInt(x, 10))
	default:
		*p = Principal(fmt.Sprintf("<%T>", v)) // never valid
	}
	return nil
}

// maxID is the largest usable uid or gid ((uid_t)-1 means "none").
const maxID = 1<<32 - 2

// accountRE is what brouter accepts as a user or group name: the portable
// characters of POSIX user names plus Samba's trailing '$', at most 32 bytes
// (useradd's limit). It is only ever looked up, never passed to a shell.
var accountRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}\$?$`)

// ID returns the entry's numeric id, and whether it is one.
func (p Principal) ID() (uint32, bool) {
	s := string(p)
	if s == "" || len(s) > 10 || s[0] == '+' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, false
	}
	return uint32(n), true
}

func validatePrincipals(key string, ps []Principal) ([]Principal, error) {
	var out []Principal
	for i, p := range ps {
		if _, ok := p.ID(); ok {
			out = append(out, p)
			continue
		}
		if strings.Trim(string(p), "+-0123456789") == "" && p != "" {
			return nil, fmt.Errorf("%s[%d] = %s: want a numeric id from 0 to %d, or a name", key, i, string(p), maxID)
		}
		if !accountRE.MatchString(string(p)) {
			return nil, fmt.Errorf("%s[%d] = %q: want a name (letters, digits, '_', '.', '-'; at most 32) or a numeric id", key, i, string(p))
		}
		out = append(out, p)
	}
	return out, nil
}
