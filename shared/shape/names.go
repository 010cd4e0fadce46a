package shape

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/brouter/brouter/shared/names"
)

// Names.
const (
	specMark     = "brouter-shape/1" // first word of every filter name and ifb alias
	portIfbPre   = "brsp"
	netToIfbPre  = "brst"
	netFromIfbPr = "brsf"
)

var (
	reservedRE = regexp.MustCompile(`^brs[pft][0-9a-f]{11}$`)
)

func hash11(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:11]
}

// PortIfb is the name of the ifb that shapes what the guest behind port sends
// (when the port is not part of a network aggregate).
func PortIfb(port string) string { return portIfbPre + hash11("port\x00"+port) }

// NetworkIfbs returns the names of the ifbs of a network's aggregate limits.
func NetworkIfbs(network string) (toGuestIfb, fromGuestIfb string) {
	h := hash11("network\x00" + network)
	return netToIfbPre + h, netFromIfbPr + h
}

func netIfbName(network string, d direction) string {
	t, f := NetworkIfbs(network)
	if d == toGuest {
		return t
	}
	return f
}

func validPort(port string) error {
	if err := names.Interface(port); err != nil {
		return fmt.Errorf("shape: invalid port name: %w", err)
	}
	if reservedRE.MatchString(port) {
		return fmt.Errorf("shape: invalid port name %q: names brs[pft]<hash> belong to brouter's ifb devices", port)
	}
	return nil
}

func validNetwork(network string) error {
	if err := names.Network(network); err != nil {
		return fmt.Errorf("shape: invalid %w", err)
	}
	return nil
}

// Filter names: the spec of a port's direction, written into its classifier
// filter on the port, and into its tag filter on a network ifb.
func portFilterName(l Limit, p Priority, network string) string {
	if network == "" {
		network = "-"
	}
	return fmt.Sprintf("%s rate=%d burst=%d prio=%s net=%s", specMark, l.Rate, l.Burst, p, network)
}

// portIfbAlias labels the ifb of a port's own from-guest shaper.
func portIfbAlias(port string, d direction) string {
	return fmt.Sprintf("%s port=%s dir=%s", specMark, port, d)
}

// netAlias labels a network ifb with its network and aggregate limit.
func netAlias(network string, d direction, l Limit) string {
	return fmt.Sprintf("%s network=%s dir=%s rate=%d burst=%d", specMark, network, d, l.Rate, l.Burst)
}

func tagName(port string, l Limit, p Priority) string {
	return fmt.Sprintf("%s port=%s rate=%d burst=%d prio=%s", specMark, port, l.Rate, l.Burst, p)
}

type parsedName struct {
	port    string
	limit   Limit
	prio    Priority
	network string
}

func parseName(name string) (parsedName, bool) {
	f := strings.Fields(name)
	if len(f) == 0 || f[0] != specMark {
		return parsedName{}, false
	}
	var out parsedName
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return parsedName{}, false
		}
		var err error
		switch k {
		case "port":
			out.port = v
		case "rate":
			out.limit.Rate, err = strconv.ParseUint(v, 10, 64)
		case "burst":
			out.limit.Burst, err = strconv.ParseUint(v, 10, 64)
		case "prio":
			out.prio, err = ParsePriority(v)
		case "net", "network":
			if v != "-" {
				out.network = v
			}
		}
		if err != nil {
			return parsedName{}, false
		}
	}
	return out, true
}
