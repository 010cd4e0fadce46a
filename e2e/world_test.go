package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// Addresses of the standard scenario.
const (
	uplinkDom0  = "192.0.2.1" // dom0's end of the uplink
	outsideIP   = "192.0.2.2" // the "internet" beyond dom0
	guestNet    = "10.98.98.0/24"
	gatewayIP   = "10.98.98.1"
	gatewayCIDR = "10.98.98.1/24"
	uplinkDev   = "up0" // dom0's uplink interface
)

// world is one scenario: a dom0 namespace that runs the programs, optionally
// an outside namespace beyond dom0's uplink, and guest namespaces whose veth
// ends in dom0 (vg1, vg2, ...) are ready to be put on the bridge.
//
//	dom0: up0 192.0.2.1/24, default via 192.0.2.2  <->  outside: eth0 192.0.2.2/24
//	dom0: vgN (no address)                         <->  guestN: eth0 10.98.98.1N/24, default via 10.98.98.1
type world struct {
	t       *testing.T
	bin     string // network-virtual
	dom0    *nstest.NS
	outside *nstest.NS // nil without an uplink
	guests  []*guest

	config   string // BROUTER_CONFIG (exists, possibly empty)
	runDir   string
	stateDir string
}

type guest struct {
	ns   *nstest.NS
	ip   string // 10.98.98.1N
	port string // dom0's end of its veth: vgN
}

type worldOpts struct {
	outside bool
	guests  int
}

func newWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	w := &world{t: t, bin: binary(t, "network-virtual")}
	dir := t.TempDir()
	w.config = filepath.Join(dir, "brouter.toml")
	w.runDir = filepath.Join(dir, "run")
	w.stateDir = filepath.Join(dir, "state")
	for _, d := range []string{w.runDir, w.stateDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.writeConfig("")
	w.dom0 = nstest.New(t, "dom0")
	if o.outside {
		w.outside = nstest.New(t, "out")
		nstest.Veth(t, w.dom0, uplinkDev, w.outside, "eth0")
		w.dom0.Exec(t, "ip", "addr", "add", uplinkDom0+"/24", "dev", uplinkDev)
		w.outside.Exec(t, "ip", "addr", "add", outsideIP+"/24", "dev", "eth0")
		w.dom0.Exec(t, "ip", "route", "add", "default", "via", outsideIP)
		w.setupObserver()
	}
	for i := 1; i <= o.guests; i++ {
		g := &guest{ns: nstest.New(t, fmt.Sprintf("g%d", i)), ip: fmt.Sprintf("10.98.98.1%d", i), port: fmt.Sprintf("vg%d", i)}
		nstest.Veth(t, w.dom0, g.port, g.ns, "eth0")
		g.ns.Exec(t, "ip", "addr", "add", g.ip+"/24", "dev", "eth0")
		g.ns.Exec(t, "ip", "route", "add", "default", "via", gatewayIP)
		w.guests = append(w.guests, g)
	}
	return w
}

// writeConfig replaces the TOML file BROUTER_CONFIG points at.
func (w *world) writeConfig(toml string) {
	w.t.Helper()
	if err := os.WriteFile(w.config, []byte(toml), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// netConfig is the TOML of one network named "e2e" on bridge br-e2e.
func netConfig(mode, backend string, extra ...string) string {
	s := fmt.Sprintf("[network.e2e]\nbridge = \"br-e2e\"\naddress = %q\nmode = %q\nfirewall = %q\n", gatewayCIDR, mode, backend)
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}

// result of one program run.
type result struct {
	args   []string
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("network-virtual %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run calls network-virtual inside dom0 the way xend/systemd/an admin do,
// with the test's config, run and state directories.
func (w *world) run(args ...string) result {
	w.t.Helper()
	r, err := w.runNoFatal(args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// runNoFatal is run for other goroutines than the test's: it returns what
// run would fail the test with (the program could not be started or hung).
func (w *world) runNoFatal(args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := w.dom0.CmdContext(ctx, append([]string{w.bin}, args...)...)
	cmd.Env = append(os.Environ(),
		"BROUTER_CONFIG="+w.config,
		"BROUTER_RUN_DIR="+w.runDir,
		"BROUTER_STATE_DIR="+w.stateDir,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("network-virtual %s: %v (stderr: %s)", strings.Join(args, " "), err, r.stderr)
	}
	return r, nil
}

// mustRun runs network-virtual and fails the test unless it exits with want.
func (w *world) mustRun(want int, args ...string) result {
	w.t.Helper()
	r := w.run(args...)
	if r.code != want {
		w.t.Fatalf("want exit %d, got:\n%s", want, r)
	}
	return r
}

// attach puts every guest's dom0 veth end on the bridge (what the vif/tap
// hooks will do in later issues).
func (w *world) attach(bridge string) {
	w.t.Helper()
	for _, g := range w.guests {
		w.dom0.Exec(w.t, "ip", "link", "set", g.port, "master", bridge, "up")
	}
}

// setupObserver installs, in the outside namespace, counters of the echo
// requests that arrive from dom0's uplink address and from the guest network:
// that is how a test sees which source address the outside world gets.
func (w *world) setupObserver() {
	w.t.Helper()
	rules := fmt.Sprintf(`table inet e2e-observe {
	counter from_uplink { }
	counter from_guests { }
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr %s icmp type echo-request counter name from_uplink
		ip saddr %s icmp type echo-request counter name from_guests
	}
}
`, uplinkDom0, guestNet)
	cmd := w.outside.Cmd("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("outside: nft -f: %v: %s", err, out)
	}
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

// observed returns how many echo requests the outside namespace counted.
func (w *world) observed(counter string) int {
	w.t.Helper()
	out := w.outside.Exec(w.t, "nft", "list", "counter", "inet", "e2e-observe", counter)
	m := packetsRE.FindStringSubmatch(out)
	if m == nil {
		w.t.Fatalf("outside: no packet count in: %s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// mustPing fails the test unless from reaches addr.
func mustPing(t *testing.T, from *nstest.NS, name, addr string) {
	t.Helper()
	if err := from.Ping(t, addr); err != nil {
		t.Errorf("%s cannot reach %s: %v", name, addr, err)
	}
}

// mustNotPing fails the test if from reaches addr.
func mustNotPing(t *testing.T, from *nstest.NS, name, addr string) {
	t.Helper()
	if err := from.PingOnce(addr); err == nil {
		t.Errorf("%s reaches %s, want it unreachable", name, addr)
	}
}

// sameState fails the test when dom0's state differs from want.
func (w *world) sameState(what, want string) {
	w.t.Helper()
	if d := nstest.Diff(want, w.dom0.Dump(w.t)); d != "" {
		w.t.Errorf("%s: dom0 state differs (- expected, + got):\n%s", what, d)
	}
}

// sameStateAfterStop is sameState for a comparison with the state before
// start, tolerating one residue: built-in iptables tables/chains that are
// empty and have policy ACCEPT (iptables-nft creates them on first use, and
// with iptables-legacy they exist as soon as the table module is loaded).
// They do nothing; the residue is logged, not failed.
func (w *world) sameStateAfterStop(what, want string) {
	w.t.Helper()
	got := w.dom0.Dump(w.t)
	d := nstest.Diff(want, got)
	if d == "" {
		return
	}
	if nstest.Diff(nstest.WithoutEmptyBuiltins(want), nstest.WithoutEmptyBuiltins(got)) == "" {
		w.t.Logf("note: %s: only empty built-in iptables tables/chains (policy ACCEPT) remain:\n%s", what, d)
		return
	}
	w.t.Errorf("%s: dom0 state differs (- expected, + got):\n%s", what, d)
}

// oneLineError checks a failed run: exit 1 or 2 and exactly one non-empty
// line on stderr.
func oneLineError(t *testing.T, r result) {
	t.Helper()
	if r.code != 1 && r.code != 2 {
		t.Errorf("want exit 1 or 2, got:\n%s", r)
	}
	var lines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Errorf("want exactly one line on stderr, got %d:\n%s", len(lines), r)
	}
}

// bridgeNeutral removes from a dump what differs between two creations of the
// same bridge: its random MAC and the IPv6 link-local address derived from it.
func bridgeNeutral(dump, bridge string) string {
	macRE := regexp.MustCompile(` mac=\S+`)
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "link "+bridge+" "):
			l = macRE.ReplaceAllString(l, " mac=(bridge)")
		case strings.HasPrefix(l, "addr "+bridge+" inet6 fe80:"):
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
