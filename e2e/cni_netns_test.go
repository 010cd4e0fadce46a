package e2e

// A container namespace that is not one: CNI_NETNS naming the plugin's own
// (host) namespace, or a path that is no network namespace at all. ADD must
// refuse before it changes anything, and DEL must succeed after any failed
// ADD.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/brouter/brouter/shared/nstest"
)

// cniPluginEnv is the CNI_* environment of one direct plugin call.
func cniPluginEnv(cmd, containerID, netns string) []string {
	return []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0"}
}

// cniErrorCode parses a plugin's stdout as a CNI error (0: it is none).
func cniErrorCode(stdout string) (uint, string) {
	var e types.Error
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		return 0, ""
	}
	return e.Code, e.Msg + " " + e.Details
}

// TestCNIHostNetnsRefused gives ADD the host's own namespace as the
// container's (/proc/self/ns/net, /proc/thread-self/ns/net, dom0's
// /run/netns path: the plugin runs in dom0): ADD fails with code 4 (bad
// CNI_NETNS) and changes nothing: dom0 (links, addresses, routes, firewall,
// tc), brouter's records, host-local's allocations. Then DEL succeeds, with
// that CNI_NETNS and with none. Other failed ADDs (a netns path that does
// not exist, one that is another kind of namespace, a file that is none, a
// container that has eth0 already, an IPAM plugin that is missing) are each
// followed by DEL, which must succeed and leave the state as before. A
// control ADD with the container's namespace works and its DEL restores it.
func TestCNIHostNetnsRefused(t *testing.T) {
	t.Parallel()
	cw, _ := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	dataDir := t.TempDir()
	list, _ := robustConflist(t, dataDir)
	stdin := string(robustPluginStdin(t, list, robustBandwidth))
	ctr := nstest.New(t, "ctr")
	busy := nstest.New(t, "ctr") // a container whose eth0 exists already
	busy.Exec(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	dump := func() string { return cw.robustDump(t, dataDir, ctr, busy) }
	before := dump()

	del := func(what, id, netns, stdin string) {
		t.Helper()
		for _, ns := range []string{netns, ""} {
			if code, out := cw.plugin(stdin, cniPluginEnv("DEL", id, ns)...); code != 0 {
				t.Errorf("%s: DEL (CNI_NETNS=%q) after the failed ADD: exit %d: %s", what, ns, code, out)
			}
		}
		if d := nstest.Diff(before, dump()); d != "" {
			t.Errorf("%s: the failed ADD and DEL left something (- before, + after):\n%s", what, d)
			before = dump()
		}
	}

	for i, netns := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net", cw.dom0.Path()} {
		id := "hostns" + string(rune('0'+i))
		code, out := cw.plugin(stdin, cniPluginEnv("ADD", id, netns)...)
		ec, msg := cniErrorCode(out)
		switch {
		case code == 0:
			t.Errorf("ADD with CNI_NETNS=%s (the host's namespace): exit 0; stdout %s", netns, out)
		case ec != types.ErrInvalidEnvironmentVariables:
			t.Errorf("ADD with CNI_NETNS=%s: CNI error code %d (%s), want %d (bad CNI_NETNS)", netns, ec, out, types.ErrInvalidEnvironmentVariables)
		default:
			t.Logf("CNI_NETNS=%s: code %d: %s", netns, ec, msg)
		}
		if d := nstest.Diff(before, dump()); d != "" {
			t.Errorf("ADD with CNI_NETNS=%s changed the host (- before, + after):\n%s", netns, d)
			before = dump()
		}
		del("CNI_NETNS="+netns, id, netns, stdin)
	}

	noIPAM := strings.Replace(stdin, `"type":"host-local"`, `"type":"no-such-ipam"`, 1)
	if noIPAM == stdin {
		t.Fatalf("no host-local IPAM in %s", stdin)
	}
	// DEL gets the ADD's config, except after the ADD whose IPAM plugin is
	// missing: that DEL fails too, as it cannot release anything, until the
	// plugin is there (here: the config that names one that is).
	for _, c := range []struct {
		what, netns, stdin string
	}{
		{"a netns path that does not exist", "/run/netns/brt-does-not-exist", stdin},
		{"a UTS namespace", "/proc/self/ns/uts", stdin},
		{"a file that is no namespace", "/etc/hostname", stdin},
		{"a container with eth0 already", busy.Path(), stdin},
		{"a missing IPAM plugin", ctr.Path(), noIPAM},
	} {
		id := "failed-" + strings.ReplaceAll(c.what, " ", "-")
		code, out := cw.plugin(c.stdin, cniPluginEnv("ADD", id, c.netns)...)
		if code == 0 {
			t.Errorf("%s: ADD succeeded; stdout %s", c.what, out)
		} else if ec, msg := cniErrorCode(out); ec == 0 {
			t.Errorf("%s: stdout is not a CNI error: %q", c.what, out)
		} else {
			t.Logf("%s: code %d: %s", c.what, ec, msg)
		}
		del(c.what, id, c.netns, stdin)
	}

	// The control: the container's own namespace works, and DEL restores.
	if code, out := cw.plugin(stdin, cniPluginEnv("ADD", "control", ctr.Path())...); code != 0 {
		t.Fatalf("control ADD: exit %d: %s", code, out)
	}
	if out := ctr.Exec(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.98.98.") {
		t.Errorf("control ADD: container eth0 has no address: %s", out)
	}
	mustPing(t, ctr, "ctr", gatewayIP)
	del("control", "control", ctr.Path(), stdin)
}
