package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// qemuScript runs qemu-ifup (or, through a symlink, qemu-ifdown) in dom0 the
// way QEMU does: its own environment, the tap name and maybe a bridge.
func (w *world) qemuScript(name string, env []string, args ...string) (code int, stderr string) {
	w.t.Helper()
	bin := binary(w.t, "qemu-ifup")
	if name != "qemu-ifup" {
		link := filepath.Join(filepath.Dir(w.config), name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(bin, link); err != nil {
				w.t.Fatal(err)
			}
		}
		bin = link
	}
	cmd := w.dom0.Cmd(append([]string{bin}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BROUTER_CONFIG=" + w.config,
		"BROUTER_RUN_DIR=" + w.runDir, "BROUTER_STATE_DIR=" + w.stateDir}, env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return code, errb.String()
}

func TestQemuIfupIfdown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
[[network.lab.port]]
name = "tap-web*"
mac = "00:16:3e:00:00:20"
ips = ["10.98.98.20"]
[network.other]
bridge = "brother"
address = "10.97.0.1/24"
`)
	w.mustRun(0, "start", "net=lab")
	w.mustRun(0, "start", "net=other")
	for _, tap := range []string{"tap-web0", "tap1", "tap2", "tap3"} {
		w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", tap)
	}
	// An empty bridge loses its carrier a moment after its last port goes:
	// compare without the routes' "linkdown" flag.
	// Nor the root qdisc a device gets when it was once up (noop before, a
	// default qdisc after): the kernel's, not brouter's.
	qdisc := regexp.MustCompile(` qdisc=[a-z_]+`)
	dump := func() string { return qdisc.ReplaceAllString(strings.ReplaceAll(w.dom0.Dump(t), " linkdown", ""), "") }
	before := dump()

	// Network by port rule (tap-web*), by the BRIDGE argument, by $BROUTER_NETWORK, by default.
	cases := []struct {
		tap, bridge, envNet, want string
	}{
		{"tap-web0", "", "", "brlab"},
		{"tap1", "brother", "", "brother"},
		{"tap2", "", "other", "brother"},
	}
	for _, c := range cases {
		args := []string{c.tap}
		if c.bridge != "" {
			args = append(args, c.bridge)
		}
		var env []string
		if c.envNet != "" {
			env = append(env, "BROUTER_NETWORK="+c.envNet)
		}
		if code, stderr := w.qemuScript("qemu-ifup", env, args...); code != 0 {
			t.Fatalf("qemu-ifup %v: exit %d: %s", args, code, stderr)
		}
		out := w.dom0.Exec(t, "ip", "link", "show", c.tap)
		if !strings.Contains(out, "master "+c.want) || !strings.Contains(out, "fe:ff:ff:ff:ff:ff") {
			t.Errorf("%s: want on %s with MAC fe:ff:ff:ff:ff:ff:\n%s", c.tap, c.want, out)
		}
	}
	// No bridge, no rule, several networks and no default_network: a clear error.
	if code, stderr := w.qemuScript("qemu-ifup", nil, "tap3"); code == 0 || !strings.Contains(stderr, "default_network") {
		t.Errorf("tap3 without a network: exit %d: %s", code, stderr)
	}
	// The port rule gives tap-web0's guest antispoof.
	if set := w.dom0.Exec(t, "nft", "list", "set", "bridge", "brouter-lab", "as_ip4"); !strings.Contains(set, `"tap-web0" . 10.98.98.20`) {
		t.Errorf("no antispoof entry for tap-web0:\n%s", set)
	}
	for _, tap := range []string{"tap-web0", "tap1", "tap2"} {
		for i := 0; i < 2; i++ { // ifdown twice: QEMU may, and it must succeed
			if code, stderr := w.qemuScript("qemu-ifdown", nil, tap); code != 0 {
				t.Fatalf("qemu-ifdown %s: exit %d: %s", tap, code, stderr)
			}
		}
	}
	after := dump()
	if d := nstest.Diff(before, after); d != "" {
		t.Errorf("ifdown left something of the ports behind:\n%s", d)
	}

	// Bad input: exit non-zero, one line on stderr, nothing half-attached.
	for _, args := range [][]string{
		{"nosuchtap"},
		{"tap3", "nosuchbridge"},
		{"tap/3"},
		{},
	} {
		code, stderr := w.qemuScript("qemu-ifup", nil, args...)
		if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || stderr == "" {
			t.Errorf("qemu-ifup %v: exit %d, stderr %q; want non-zero and one line", args, code, stderr)
		}
	}
	if d := nstest.Diff(after, dump()); d != "" {
		t.Errorf("bad input changed dom0:\n%s", d)
	}
	w.writeConfig("[network.lab\n")
	if code, stderr := w.qemuScript("qemu-ifup", nil, "tap3"); code == 0 || !strings.Contains(stderr, "line") {
		t.Errorf("malformed config: exit %d: %s", code, stderr)
	}
}
