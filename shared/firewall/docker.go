package firewall

import (
	"fmt"
	"strings"
)

// Docker compatibility, for both backends.
//
// Docker sets the iptables filter FORWARD policy to DROP and keeps a chain
// DOCKER-USER first in FORWARD for the administrator's own rules. A packet
// that our rules accept is then still dropped by Docker's policy (with the
// nftables backend, an accept in our table does not override a drop in
// iptables-nft's "ip filter FORWARD"). So on such hosts our accept rules are
// (also) jumped from DOCKER-USER, whose content Docker leaves alone.

const dockerUser = "DOCKER-USER"

// forwardHooks is where the iptables backend's forward chain BR-FWD-NET is
// jumped from: FORWARD, and DOCKER-USER too when it exists (Docker's FORWARD
// policy DROP then never sees our guests' accepted traffic).
func (f *iptFamily) forwardHooks() ([]string, error) {
	ok, err := f.chainExists("filter", dockerUser)
	if err != nil {
		return nil, err
	}
	if ok {
		return []string{builtinFwd, dockerUser}, nil
	}
	return []string{builtinFwd}, nil
}

// syncDockerCompat is the nftables backend's Docker compatibility, for every
// iptables family present. An accept in our nft table does not override a drop
// in another table (such as iptables-nft's "ip filter FORWARD" with Docker's
// policy DROP), so where filter FORWARD has policy DROP or a DOCKER-USER chain
// exists, the accept rules of the plan are also installed as BR-FWD-NET,
// jumped from DOCKER-USER if it exists (Docker keeps it first in FORWARD and
// leaves its content alone), else from FORWARD. Elsewhere the chain is removed.
func syncDockerCompat(fams []*iptFamily, r NetworkRules) error {
	rules := plan(r)
	for _, f := range fams {
		from, err := f.dockerHooks()
		if err != nil {
			return err
		}
		name := fwdChain(r.Network)
		if len(from) == 0 {
			if err := f.removeChain("filter", name, builtinFwd, dockerUser); err != nil {
				return err
			}
			continue
		}
		if err := f.apply(ourChain{table: "filter", name: name, rules: f.specs(r.Network, rules, chainForward, true), from: from}); err != nil {
			return err
		}
		// Docker may have appeared since the last Ensure: keep only the wanted jump.
		stale := builtinFwd
		if from[0] == builtinFwd {
			stale = dockerUser
		}
		if err := f.unjump("filter", name, stale); err != nil {
			return err
		}
	}
	return nil
}

// dockerHooks returns where the Docker-compatibility chain must be jumped
// from: DOCKER-USER when it exists, else FORWARD when its policy is DROP, else nowhere.
func (f *iptFamily) dockerHooks() ([]string, error) {
	ok, err := f.chainExists("filter", dockerUser)
	if err != nil || ok {
		return []string{dockerUser}, err
	}
	lines, err := f.ipt.List("filter", builtinFwd)
	if err != nil {
		return nil, fmt.Errorf("%s: list FORWARD: %w", f.cmd, err)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "-P" && f[2] == "DROP" {
			return []string{builtinFwd}, nil
		}
	}
	return nil, nil
}
