package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
	"github.com/brouter/brouter/shared/xenstore"
)

// vifHost is a world (dom0, outside, the config and state directories) plus
// what Xen adds for a vif hotplug script: a xenstore (the project's
// wire-protocol double on a Unix socket) and the vif-brouter binary.
type vifHost struct {
	*world
	vifBin string
	xs     *xenstore.Server
}

func newVifHost(t *testing.T, o worldOpts) *vifHost {
	t.Helper()
	bin := binary(t, "vif-brouter")
	w := newWorld(t, o)
	// A short directory of its own: a Unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "brxs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := xenstore.NewServer(filepath.Join(dir, "socket"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &vifHost{world: w, vifBin: bin, xs: srv}
}

// xvif is one Xen network device of a guest: domain domid, device devid.
type xvif struct {
	domid, devid int
	mac          string // the guest's MAC, the backend's "mac" key
}

func newXvif(domid, devid int) xvif {
	return xvif{domid: domid, devid: devid, mac: fmt.Sprintf("00:16:3e:00:%02x:%02x", domid, devid)}
}

// name is what netback calls the backend device: vif<domid>.<devid>.
func (v xvif) name() string { return fmt.Sprintf("vif%d.%d", v.domid, v.devid) }

// emu is the name of the HVM emulated NIC's tap: vif<domid>.<devid>-emu.
func (v xvif) emu() string { return v.name() + "-emu" }

// xenbusPath is XENBUS_PATH as libxl passes it (relative to /local/domain/0).
func (v xvif) xenbusPath() string { return fmt.Sprintf("backend/vif/%d/%d", v.domid, v.devid) }

func (v xvif) backend() string { return "/local/domain/0/" + v.xenbusPath() }
func (v xvif) frontend() string {
	return fmt.Sprintf("/local/domain/%d/device/vif/%d", v.domid, v.devid)
}

// writeBackend writes the keys libxl writes before it runs the hotplug
// script (backend and frontend), for a PV vif on bridge; extra adds or
// replaces backend keys (vifname, ip, rate, mtu, gatewaydev, type, ...).
func (h *vifHost) writeBackend(v xvif, bridge string, extra map[string]string) {
	be, fe := v.backend(), v.frontend()
	keys := map[string]string{
		"frontend":       fe,
		"frontend-id":    fmt.Sprint(v.domid),
		"online":         "1",
		"state":          "2",
		"script":         h.vifBin,
		"mac":            v.mac,
		"bridge":         bridge,
		"handle":         fmt.Sprint(v.devid),
		"type":           "vif",
		"hotplug-status": "",
	}
	for k, val := range extra {
		keys[k] = val
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h.xs.Set(be+"/"+k, keys[k])
	}
	for k, val := range map[string]string{
		"backend": be, "backend-id": "0", "handle": fmt.Sprint(v.devid), "mac": v.mac, "state": "1",
	} {
		h.xs.Set(fe+"/"+k, val)
	}
}

// key reads a backend key ("" and false when absent).
func (h *vifHost) key(v xvif, k string) (string, bool) { return h.xs.Get(v.backend() + "/" + k) }

// vifRun is one run of vif-brouter.
type vifRun struct {
	args   []string
	env    []string
	code   int
	stdout string
	stderr string
	took   time.Duration
}

func (r vifRun) String() string {
	return fmt.Sprintf("vif-brouter %s: exit %d after %v\nenv: %s\nstdout: %s\nstderr: %s",
		strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), strings.Join(r.env, " "), r.stdout, r.stderr)
}

// libxlEnv is the environment libxl gives a vif hotplug script (and nothing
// else: "env -i"), plus the double's socket and the test's directories.
// over adds or replaces variables ("NAME=VALUE") or removes them ("-NAME").
func (h *vifHost) libxlEnv(v xvif, typeIf string, over ...string) []string {
	m := map[string]string{
		"script":            h.vifBin,
		"XENBUS_TYPE":       "vif",
		"XENBUS_PATH":       v.xenbusPath(),
		"XENBUS_BASE_PATH":  "backend",
		"netdev":            "",
		"vif":               v.name(),
		"XENSTORED_PATH":    h.xs.Path(),
		"BROUTER_CONFIG":    h.config,
		"BROUTER_RUN_DIR":   h.runDir,
		"BROUTER_STATE_DIR": h.stateDir,
	}
	if gw, ok := h.key(v, "gatewaydev"); ok {
		m["netdev"] = gw
	}
	if typeIf == "tap" {
		m["INTERFACE"] = v.emu()
	}
	for _, o := range over {
		if name, ok := strings.CutPrefix(o, "-"); ok {
			delete(m, name)
			continue
		}
		k, val, _ := strings.Cut(o, "=")
		m[k] = val
	}
	env := make([]string, 0, len(m))
	for k, val := range m {
		env = append(env, k+"="+val)
	}
	sort.Strings(env)
	return env
}

// vifCmd runs vif-brouter inside dom0 with argv args (after argv[0]) and
// exactly the environment env, stdin /dev/null, as libxl does. It never fails
// the test itself (it is used from goroutines); err is for a run that could
// not start or was killed after 45 s (libxl gives up at 40 s).
func (h *vifHost) vifCmd(env []string, args ...string) (vifRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := h.dom0.CmdContext(ctx, append([]string{h.vifBin}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := vifRun{args: args, env: env, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(t0)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("vif-brouter %s: %v (stderr: %s)", strings.Join(args, " "), err, r.stderr)
	}
	return r, nil
}

// vifRunT is vifCmd for the test's goroutine, failing the test when want
// (>= 0) differs from the exit code; want -1 means "any non-zero".
func (h *vifHost) vifRunT(t *testing.T, want int, env []string, args ...string) vifRun {
	t.Helper()
	r, err := h.vifCmd(env, args...)
	if err != nil {
		t.Fatal(err)
	}
	if (want >= 0 && r.code != want) || (want < 0 && r.code == 0) {
		t.Fatalf("want exit %s, got:\n%s", map[bool]string{true: "non-zero", false: fmt.Sprint(want)}[want < 0], r)
	}
	return r
}

// online / offline as libxl calls them for a PV vif.
func (h *vifHost) online(t *testing.T, v xvif, want int, over ...string) vifRun {
	t.Helper()
	return h.vifRunT(t, want, h.libxlEnv(v, "vif", over...), "online", "type_if=vif")
}

func (h *vifHost) offline(t *testing.T, v xvif, over ...string) vifRun {
	t.Helper()
	return h.vifRunT(t, 0, h.libxlEnv(v, "vif", over...), "offline", "type_if=vif")
}

// connected fails the test unless the backend's hotplug-status is "connected".
func (h *vifHost) connected(t *testing.T, v xvif, r vifRun) {
	t.Helper()
	if s, _ := h.key(v, "hotplug-status"); s != "connected" {
		e, _ := h.key(v, "hotplug-error")
		t.Errorf("%s: hotplug-status = %q (hotplug-error %q), want \"connected\"\n%s", v.name(), s, e, r)
	}
}

// failedProperly checks the failure contract: non-zero exit, one line on
// stderr, hotplug-status=error and a one-line hotplug-error.
func (h *vifHost) failedProperly(t *testing.T, v xvif, r vifRun) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("want a non-zero exit, got:\n%s", r)
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
	if s, _ := h.key(v, "hotplug-status"); s != "error" {
		t.Errorf("hotplug-status = %q, want \"error\"", s)
	}
	e, ok := h.key(v, "hotplug-error")
	if !ok || strings.TrimSpace(e) == "" || strings.Contains(e, "\n") {
		t.Errorf("hotplug-error = %q (present %v), want a one-line reason", e, ok)
	} else {
		t.Logf("hotplug-error: %s", e)
	}
}

// vifGuest makes a guest namespace whose eth0 is the peer of the dom0 device
// port (what netback's vif is to the guest's netfront), with the guest's MAC
// and the given addresses (CIDRs). Guests in 10.98.98.0/24 route by default
// via its gateway. ARP/ND settle once the port is attached.
func (h *vifHost) vifGuest(t *testing.T, role, port, mac string, cidrs ...string) *nstest.NS {
	t.Helper()
	g := nstest.New(t, role)
	nstest.Veth(t, h.dom0, port, g, "eth0")
	g.Exec(t, "ip", "link", "set", "eth0", "address", mac)
	v4 := false
	for _, c := range cidrs {
		args := []string{"ip", "addr", "add", c, "dev", "eth0"}
		if strings.Contains(c, ":") {
			args = append(args, "nodad")
		} else if strings.HasPrefix(c, "10.98.98.") {
			v4 = true // in the standard guest network: route via its gateway
		}
		g.Exec(t, args...)
	}
	if v4 {
		g.Exec(t, "ip", "route", "add", "default", "via", gatewayIP)
	}
	return g
}

// fullDump is dom0's nstest.Dump plus what it does not show: qdiscs (and so
// shaping) on every device, and the proxy_arp setting of the given ports.
func (h *vifHost) fullDump(t *testing.T, ports ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(h.dom0.Dump(t))
	b.WriteString("== tc qdisc ==\n")
	var qs []string
	for _, l := range strings.Split(h.dom0.Exec(t, "tc", "qdisc", "show"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			qs = append(qs, l)
		}
	}
	sort.Strings(qs)
	b.WriteString(strings.Join(qs, "\n") + "\n")
	b.WriteString("== sysctl ==\n")
	for _, p := range ports {
		if out, err := h.dom0.Try("cat", "/proc/sys/net/ipv4/conf/"+p+"/proxy_arp"); err == nil {
			fmt.Fprintf(&b, "proxy_arp %s %s\n", p, strings.TrimSpace(out))
		}
	}
	return b.String()
}

// withoutPortResidue drops from a dump what a port device keeps of itself
// after offline and is not a leak: its own link line (MAC fe:ff:ff:ff:ff:ff,
// up/down, MTU: the device is netback's, and netback destroys it right after
// offline), its IPv6 link-local address and its proxy_arp setting.
func withoutPortResidue(dump string, ports ...string) string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		drop := false
		for _, p := range ports {
			if strings.HasPrefix(l, "link "+p+" ") || strings.HasPrefix(l, "addr "+p+" inet6 fe80:") ||
				strings.HasPrefix(l, "proxy_arp "+p+" ") {
				drop = true
			}
		}
		if !drop {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// sameAfterOffline compares a dump taken after offline with one taken before
// online: everything must be as it was, except the port device's own residue
// (see withoutPortResidue), which is logged.
func (h *vifHost) sameAfterOffline(t *testing.T, what, before string, ports ...string) {
	t.Helper()
	after := h.fullDump(t, ports...)
	if d := nstest.Diff(withoutPortResidue(before, ports...), withoutPortResidue(after, ports...)); d != "" {
		if nstest.Diff(withoutEmptyTables(withoutPortResidue(before, ports...)), withoutEmptyTables(withoutPortResidue(after, ports...))) == "" {
			t.Logf("note: %s: empty built-in chains/tables (policy accept) were left, e.g. by ebtables-nft:\n%s", what, d)
			return
		}
		t.Errorf("%s: dom0 differs from before online (- before, + after):\n%s", what, d)
		return
	}
	if d := nstest.Diff(before, after); d != "" {
		t.Logf("note: %s: only the port device's own residue differs:\n%s", what, d)
	}
}

// records lists the files under the run and state directories that record a
// port: anything under a ports/ directory, or naming one of the ports.
func (h *vifHost) records(t *testing.T, ports ...string) []string {
	t.Helper()
	var found []string
	for _, root := range []string{h.runDir, h.stateDir} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if strings.Contains(rel, "ports/") && !strings.HasSuffix(rel, ".lock") {
				found = append(found, rel)
				return nil
			}
			for _, port := range ports {
				if strings.Contains(filepath.Base(rel), port) && !strings.HasSuffix(rel, ".lock") {
					found = append(found, rel)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}

func (h *vifHost) noRecords(t *testing.T, what string, ports ...string) {
	t.Helper()
	if r := h.records(t, ports...); len(r) > 0 {
		t.Errorf("%s: port records left in the run/state directories: %v", what, r)
	}
}

// linkInfo is what a test checks of one dom0 device.
type linkInfo struct {
	exists bool
	master string
	mac    string
	mtu    string
	up     bool
}

var (
	masterRE = regexp.MustCompile(` master (\S+)`)
	mtuRE    = regexp.MustCompile(` mtu (\d+)`)
	etherRE  = regexp.MustCompile(`link/ether (\S+)`)
)

func (h *vifHost) link(t *testing.T, name string) linkInfo {
	t.Helper()
	out, err := h.dom0.Try("ip", "-o", "link", "show", "dev", name)
	if err != nil {
		return linkInfo{}
	}
	li := linkInfo{exists: true}
	if m := masterRE.FindStringSubmatch(out); m != nil {
		li.master = m[1]
	}
	if m := mtuRE.FindStringSubmatch(out); m != nil {
		li.mtu = m[1]
	}
	if m := etherRE.FindStringSubmatch(out); m != nil {
		li.mac = m[1]
	}
	li.up = strings.Contains(out, "<UP") || strings.Contains(out, ",UP")
	return li
}

// settle waits until dom0's state stops changing (carrier, IPv6 link-local
// addresses of a bridge that just got its first port) so that a snapshot
// taken now is the one to compare with later.
func (h *vifHost) settle(t *testing.T) {
	t.Helper()
	prev := h.fullDump(t)
	for i := 0; i < 30; i++ {
		time.Sleep(200 * time.Millisecond)
		cur := h.fullDump(t)
		if cur == prev && !strings.Contains(cur, "tentative") {
			return
		}
		prev = cur
	}
}

// anchor gives bridge a permanent port so that the bridge
// has carrier, its MAC and its link-local address before any vif comes and
// after every vif goes: otherwise the first vif changes them. (A veth pair
// inside dom0: the kernel here has no dummy driver.)
func (h *vifHost) anchor(t *testing.T, bridge string) {
	t.Helper()
	h.dom0.Exec(t, "ip", "link", "add", "anchor0", "type", "veth", "peer", "name", "anchor1")
	h.dom0.Exec(t, "ip", "link", "set", "anchor1", "up")
	h.dom0.Exec(t, "ip", "link", "set", "anchor0", "master", bridge, "up")
	h.settle(t)
}

// withoutEmptyTables is withoutEmptyBuiltins for every nft family: it also
// drops tables of any family (bridge, arp, ...) left empty by that, such as
// the "table bridge nat" with an empty PREROUTING chain that ebtables-nft
// creates on first use.
func withoutEmptyTables(dump string) string {
	lines := strings.Split(nstest.WithoutEmptyBuiltins(dump), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "table ") && strings.HasSuffix(lines[i], " {") && i+1 < len(lines) && lines[i+1] == "}" {
			i++
			continue
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n")
}
