package e2e

// Robustness tests of the CNI plugin: an ADD killed with SIGKILL at many
// points and followed by DEL, the plugin driven by the real cnitool, and
// bandwidth the shaper cannot do.

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/brouter/brouter/shared/nstest"
	"github.com/brouter/brouter/shared/shape"
)

// robustBandwidth is the "bandwidth" capability of the robustness tests:
// 10 Mbit/s both ways, so that ADD sets up HTB on the host veth and an ifb.
var robustBandwidth = map[string]any{
	"ingressRate": 10_000_000, "ingressBurst": 800_000,
	"egressRate": 10_000_000, "egressBurst": 800_000,
}

// robustConflist is cniConflist with the bandwidth capability declared, as a
// runtime's conflist for a shaping-capable plugin has it.
func robustConflist(t *testing.T, dataDir string) (*libcni.NetworkConfigList, string) {
	t.Helper()
	_, raw := cniConflist(t, dataDir)
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	plugins, _ := m["plugins"].([]any)
	if len(plugins) == 0 {
		t.Fatalf("robustConflist: no plugins in %s", raw)
	}
	plugins[0].(map[string]any)["capabilities"] = map[string]any{"bandwidth": true}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return list, string(b)
}

// robustPluginStdin is the config libcni gives the plugin on stdin for the
// list's first plugin: name and cniVersion injected, and runtimeConfig with
// the bandwidth capability when bw is not nil.
func robustPluginStdin(t *testing.T, list *libcni.NetworkConfigList, bw map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = list.Name, list.CNIVersion
	if bw != nil {
		m["runtimeConfig"] = map[string]any{"bandwidth": bw}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// robustRun is one direct execution of the brouter binary.
type robustRun struct {
	killed  bool // ended by our SIGKILL
	code    int  // exit code when not killed
	stdout  string
	stderr  string
	elapsed time.Duration // from start to exit (or to the kill's reaping)
	orphans bool          // processes it started outlived it (host-local, nft, ...)
}

func (r robustRun) String() string {
	if r.killed {
		return fmt.Sprintf("killed after %v", r.elapsed)
	}
	return fmt.Sprintf("exit %d after %v; stdout %q; stderr %q", r.code, r.elapsed, r.stdout, r.stderr)
}

// runPlugin runs the brouter binary in dom0 exactly as libcni does (CNI_*
// environment, config on stdin), in a process group of its own. With
// killAfter >= 0 the plugin is SIGKILLed (by its PID) that long after it was
// started. runPlugin then waits until every process the plugin started has
// exited (an IPAM plugin or nft it was running when killed), so that what
// follows sees the final state.
func (cw *cniWorld) runPlugin(t *testing.T, stdin []byte, command, containerID string, ctr *nstest.NS, killAfter time.Duration) robustRun {
	t.Helper()
	p := cw.startPlugin(t, stdin, command, containerID, ctr, nil)
	if killAfter >= 0 {
		if killAfter > 0 {
			time.Sleep(killAfter)
		}
		_ = p.cmd.Process.Kill() // os.ErrProcessDone when ADD was already done
	}
	return p.finish(t)
}

// robustProc is a started plugin (possibly under a wrapper).
type robustProc struct {
	cmd        *exec.Cmd
	start      time.Time
	outF, errF *os.File
}

// startPlugin starts the brouter binary in dom0 as runPlugin describes,
// under the wrapper command (argv before the plugin's path) if one is given.
func (cw *cniWorld) startPlugin(t *testing.T, stdin []byte, command, containerID string, ctr *nstest.NS, wrapper []string) *robustProc {
	t.Helper()
	dir := t.TempDir()
	p := &robustProc{}
	var err error
	if p.outF, err = os.Create(filepath.Join(dir, "stdout")); err != nil {
		t.Fatal(err)
	}
	if p.errF, err = os.Create(filepath.Join(dir, "stderr")); err != nil {
		t.Fatal(err)
	}
	argv := append(slices.Clone(wrapper), filepath.Join(cw.binDir, "brouter"))
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append([]string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + containerID,
		"CNI_NETNS=" + ctr.Path(),
		"CNI_IFNAME=eth0",
		"CNI_PATH=" + cw.binDir,
	}, cw.env...)
	p.cmd.Stdin = bytes.NewReader(stdin)
	// Files, not pipes: a killed plugin's children keep its stdout/stderr
	// open, and Wait would wait for them.
	p.cmd.Stdout, p.cmd.Stderr = p.outF, p.errF
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Started from a thread in dom0: dom0 is the plugin's host namespace.
	if err := cw.in(func() error { p.start = time.Now(); return p.cmd.Start() }); err != nil {
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	t.Cleanup(func() {
		p.outF.Close()
		p.errF.Close()
	})
	return p
}

// finish waits for the plugin (or its wrapper), then for every process in
// its process group: what the plugin started goes on after it is killed.
func (p *robustProc) finish(t *testing.T) robustRun {
	t.Helper()
	_ = p.cmd.Wait()
	r := robustRun{elapsed: time.Since(p.start)}
	// strace ends with its tracee's signal, so this holds for a killed
	// plugin under strace too.
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		r.killed = true
	} else {
		r.code = p.cmd.ProcessState.ExitCode()
	}
	pgid := p.cmd.Process.Pid
	if syscall.Kill(-pgid, 0) == nil {
		r.orphans = true
		deadline := time.Now().Add(60 * time.Second)
		for syscall.Kill(-pgid, 0) == nil {
			if time.Now().After(deadline) {
				t.Errorf("processes started by the killed plugin (pgid %d) still run after 60 s; killing them", pgid)
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				time.Sleep(100 * time.Millisecond)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	o, _ := os.ReadFile(p.outF.Name())
	e, _ := os.ReadFile(p.errF.Name())
	r.stdout, r.stderr = string(o), string(e)
	return r
}

// tcVolatile matches what changes in tc output between two identical setups.
var tcVolatile = regexp.MustCompile(` refcnt \d+| id \d+| tag [0-9a-f]+| jited| not_in_hw| in_hw`)

// robustTC lists the qdiscs of the namespace, and the classes and the
// ingress and egress filters of each of its links.
func robustTC(t *testing.T, n *nstest.NS) []string {
	t.Helper()
	var links []struct {
		Ifname string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(n.Exec(t, "ip", "-j", "link", "show")), &links); err != nil {
		t.Fatalf("parse ip -j link show: %v", err)
	}
	var lines []string
	add := func(prefix, out string) {
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(tcVolatile.ReplaceAllString(l, ""))
			if l != "" {
				lines = append(lines, prefix+l)
			}
		}
	}
	add("qdisc: ", n.Exec(t, "tc", "qdisc", "show"))
	for _, l := range links {
		add("class "+l.Ifname+": ", n.Exec(t, "tc", "class", "show", "dev", l.Ifname))
		for _, hook := range []string{"ingress", "egress"} {
			add("filter "+l.Ifname+" "+hook+": ", n.Exec(t, "tc", "filter", "show", "dev", l.Ifname, hook))
		}
	}
	sort.Strings(lines)
	return lines
}

// robustTree lists the files under a directory, with their contents.
// Directories are left out (record directories are made on first use and
// stay, empty), and so are host-local's own bookkeeping files, made on its
// first allocation and never removed: its lock and last_reserved_ip.*.
// So are the tickets in brouter's lock queues (locks/NAME.lock.q/N): a
// caller killed while it waited or held leaves its ticket, which the next
// caller of that lock removes (shared/state's lock_test covers that).
func robustTree(t *testing.T, root string) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() || strings.HasPrefix(d.Name(), "last_reserved_ip.") || d.Name() == "lock" ||
			strings.HasSuffix(filepath.Dir(rel), ".lock.q") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("file %s %q", rel, b))
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", root, err)
	}
	return lines
}

// robustDump is everything an ADD can leave behind: dom0's network state
// (cniNeutral's dump: links, addresses, routes, nft, iptables), dom0's tc
// objects, brouter's run and state directories, host-local's data directory
// and, for each container, its namespace's network state. Sections start
// with "== name ==".
func (cw *cniWorld) robustDump(t *testing.T, dataDir string, ctrs ...*nstest.NS) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(cniNeutral(cw.dom0.Dump(t), "brlab"))
	section := func(title string, lines []string) {
		fmt.Fprintf(&b, "== %s ==\n", title)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	section("tc", robustTC(t, cw.dom0))
	section("run dir", robustTree(t, cw.runDir))
	section("state dir", robustTree(t, cw.stateDir))
	section("ipam dir", robustTree(t, dataDir))
	for i, c := range ctrs {
		b.WriteString(strings.ReplaceAll(c.Dump(t), "== ", fmt.Sprintf("== container %d ", i)))
	}
	return b.String()
}

// robustSections splits a robustDump into its sections.
func robustSections(dump string) (names []string, body map[string]string) {
	body = map[string]string{}
	cur := ""
	for _, l := range strings.Split(dump, "\n") {
		if name, ok := strings.CutPrefix(l, "== "); ok && strings.HasSuffix(name, " ==") {
			cur = strings.TrimSuffix(name, " ==")
			names = append(names, cur)
			continue
		}
		body[cur] += l + "\n"
	}
	return names, body
}

// robustChanged names the sections of two robustDumps that differ, with how
// many lines were added and removed.
func robustChanged(before, after string) []string {
	names, a := robustSections(before)
	_, b := robustSections(after)
	var out []string
	for _, n := range names {
		if a[n] == b[n] {
			continue
		}
		plus, minus := 0, 0
		for _, l := range strings.Split(nstest.Diff(a[n], b[n]), "\n") {
			switch {
			case strings.HasPrefix(l, "+ "):
				plus++
			case strings.HasPrefix(l, "- "):
				minus++
			}
		}
		out = append(out, fmt.Sprintf("%s(+%d/-%d)", n, plus, minus))
	}
	return out
}

// robustMustBeAttached checks, after a successful ADD, what the kernel has
// for the container: the result's address on its eth0, its host veth on
// brlab with antispoof entries, and (with shaped) HTB on the host veth and
// the from-guest ifb.
func robustMustBeAttached(t *testing.T, cw *cniWorld, ctr *nstest.NS, containerID string, res *current.Result, shaped bool) string {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("ADD result: want one IP, got %v", res.IPs)
	}
	addr := res.IPs[0].Address.IP.String()
	lo, hi := netip.MustParseAddr("10.98.98.100"), netip.MustParseAddr("10.98.98.150")
	if a, err := netip.ParseAddr(addr); err != nil || a.Less(lo) || hi.Less(a) {
		t.Errorf("ADD result: address %s not in 10.98.98.100-150", addr)
	}
	hv := cniHostVeth(containerID, "eth0")
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != hv || res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != ctr.Path() {
		b, _ := json.Marshal(res.Interfaces)
		t.Errorf("ADD result: interfaces %s, want [%s, eth0 in %s]", b, hv, ctr.Path())
	}
	if out := ctr.Exec(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, " "+addr+"/24 ") {
		t.Errorf("container eth0 lacks %s/24: %s", addr, out)
	}
	if len(res.Interfaces) == 2 {
		if out := ctr.Exec(t, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, "link/ether "+res.Interfaces[1].Mac+" ") {
			t.Errorf("container eth0's MAC is not the result's %s: %s", res.Interfaces[1].Mac, out)
		}
	}
	if out := ctr.Exec(t, "ip", "-4", "route", "show", "default"); !strings.Contains(out, "default via "+gatewayIP+" dev eth0") {
		t.Errorf("container has no default route via %s: %q", gatewayIP, out)
	}
	if out := cw.dom0.Exec(t, "ip", "-o", "link", "show", "master", "brlab"); !strings.Contains(out, " "+hv+"@") {
		t.Errorf("host veth %s is not on brlab: %s", hv, out)
	}
	if set := cw.dom0.Exec(t, "nft", "list", "ruleset"); !strings.Contains(set, `"`+hv+`" . `+addr) {
		t.Errorf("no antispoof entry %s . %s in dom0's ruleset:\n%s", hv, addr, set)
	}
	qd := cw.dom0.Exec(t, "tc", "qdisc", "show", "dev", hv)
	ifb := shape.PortIfb(hv)
	_, ifbErr := cw.dom0.Try("ip", "link", "show", "dev", ifb)
	if shaped {
		if !strings.Contains(qd, "qdisc htb 1: root") {
			t.Errorf("bandwidth asked, but host veth %s has no HTB root: %s", hv, qd)
		}
		if ifbErr != nil {
			t.Errorf("egress bandwidth asked, but no ifb %s: %v", ifb, ifbErr)
		}
	} else {
		if strings.Contains(qd, "htb") {
			t.Errorf("no bandwidth asked, but host veth %s is shaped: %s", hv, qd)
		}
		if ifbErr == nil {
			t.Errorf("no bandwidth asked, but ifb %s exists", ifb)
		}
	}
	return addr
}

// TestCNIKilledMidAddThenDel SIGKILLs the plugin's ADD (with shaping) at a
// sweep of delays from its start to past its normal duration, and after each
// kill runs DEL through libcni: dom0 (links, addresses, routes, nft, tc),
// brouter's records, host-local's allocations and the container's namespace
// must be exactly as before the ADD; a second DEL succeeds and changes
// nothing. Every run then ends with a full ADD/CHECK/DEL to show that the
// kills broke nothing for later containers.
func TestCNIKilledMidAddThenDel(t *testing.T) {
	// Not parallel: the sweep's delays are relative to an ADD's duration
	// measured here, which other tests running at the same time would skew.
	cw, _ := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	dataDir := t.TempDir()
	list, _ := robustConflist(t, dataDir)
	stdin := robustPluginStdin(t, list, robustBandwidth)
	ctr := nstest.New(t, "ctr")
	rt := func(id string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: ctr.Path(), IfName: "eth0",
			CapabilityArgs: map[string]any{"bandwidth": robustBandwidth}}
	}
	dump := func() string { return cw.robustDump(t, dataDir, ctr) }

	// Measure a whole ADD, three times, each followed by DEL.
	before := dump()
	var durs []time.Duration
	for i := range 3 {
		id := fmt.Sprintf("measure%d", i)
		r := cw.runPlugin(t, stdin, "ADD", id, ctr, -1)
		if r.killed || r.code != 0 {
			t.Fatalf("ADD %s: %s", id, r)
		}
		durs = append(durs, r.elapsed)
		res, err := current.NewResultFromResult(mustParseResult(t, r.stdout))
		if err != nil {
			t.Fatalf("ADD %s: result %q: %v", id, r.stdout, err)
		}
		if i == 0 {
			robustMustBeAttached(t, cw, ctr, id, res, true)
			mustPing(t, ctr, "container", gatewayIP)
		}
		if err := cw.del(list, rt(id)); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
		if d := nstest.Diff(before, dump()); d != "" {
			t.Fatalf("ADD+DEL %s left something (- before, + after):\n%s", id, d)
		}
	}
	slices.Sort(durs)
	full := durs[1]
	t.Logf("a whole ADD with shaping takes %v (median of %v)", full, durs)

	kc := &robustKillCheck{t: t, cw: cw, list: list, rt: rt, dump: dump, before: before}
	type point struct {
		d       time.Duration
		outcome string
		left    []string
		orphans bool
	}
	var points []point
	count := map[string]int{}
	probe := func(i int, d time.Duration) {
		id := fmt.Sprintf("kill%02d", i)
		r := cw.runPlugin(t, stdin, "ADD", id, ctr, d)
		outcome, left := kc.delAfter(fmt.Sprintf("kill after %v", d), id, r)
		count[outcome]++
		points = append(points, point{d: d, outcome: outcome, left: left, orphans: r.orphans})
	}
	// 0 to 1.2 x the whole ADD, in 20 steps; then, if fewer than 5 kills
	// landed mid-ADD (a loaded machine), the midpoints of the steps.
	const steps = 20
	step := full * 6 / 5 / steps
	for i := range steps + 1 {
		probe(i, time.Duration(i)*step)
	}
	if count[killedMidAdd] < 5 {
		for i := range steps {
			probe(steps+1+i, time.Duration(i)*step+step/2)
		}
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].d < points[j].d })
	var b strings.Builder
	for _, p := range points {
		fmt.Fprintf(&b, "  kill after %8v: %-17s", p.d.Round(10*time.Microsecond), p.outcome)
		if len(p.left) > 0 {
			fmt.Fprintf(&b, " left before DEL: %s", strings.Join(p.left, " "))
		}
		if p.orphans {
			b.WriteString(" [its children outlived it]")
		}
		b.WriteString("\n")
	}
	t.Logf("kill sweep: %d mid-ADD, %d before any change, %d completed, %d failed\n%s",
		count[killedMidAdd], count[killedBeforeChange], count[killedTooLate], count[killedFailed], b.String())
	if count[killedMidAdd] == 0 {
		t.Errorf("no kill landed in the middle of ADD: the sweep tested nothing")
	}

	// The kills broke nothing for the next container.
	res, err := cw.add(list, rt("after-kills"))
	if err != nil {
		t.Fatalf("ADD after the kills: %v", err)
	}
	robustMustBeAttached(t, cw, ctr, "after-kills", res, true)
	mustPing(t, ctr, "container", gatewayIP)
	if err := cw.check(list, rt("after-kills")); err != nil {
		t.Errorf("CHECK after the kills: %v", err)
	}
	if err := cw.del(list, rt("after-kills")); err != nil {
		t.Errorf("DEL after the kills: %v", err)
	}
	if d := nstest.Diff(kc.before, dump()); d != "" {
		t.Errorf("ADD+DEL after the kills left something (- before, + after):\n%s", d)
	}
}

// robustKillCheck checks what DEL does after an ADD that was killed.
type robustKillCheck struct {
	t      *testing.T
	cw     *cniWorld
	list   *libcni.NetworkConfigList
	rt     func(containerID string) *libcni.RuntimeConf
	dump   func() string
	before string // the state before the ADD
}

// Outcomes of a killed ADD.
const (
	killedBeforeChange = "before any change"
	killedMidAdd       = "mid-ADD"
	killedTooLate      = "completed"
	killedFailed       = "failed"
)

// delAfter classifies the run r of ADD for containerID (what names the kill
// point), runs DEL through libcni and checks that the state is as before the
// ADD, then runs DEL again and checks that it succeeds and changes nothing.
// It returns the outcome and the dump sections the ADD had changed.
func (k *robustKillCheck) delAfter(what, containerID string, r robustRun) (outcome string, left []string) {
	t := k.t
	t.Helper()
	left = robustChanged(k.before, k.dump())
	switch {
	case r.killed && len(left) == 0:
		outcome = killedBeforeChange
	case r.killed:
		outcome = killedMidAdd
	case r.code == 0:
		outcome = killedTooLate
	default:
		outcome = killedFailed
		t.Errorf("%s: the plugin failed by itself: %s", what, r)
	}
	if err := k.cw.del(k.list, k.rt(containerID)); err != nil {
		t.Errorf("%s (%s, left %v): DEL: %v", what, outcome, left, err)
	}
	after := k.dump()
	if diff := nstest.Diff(k.before, after); diff != "" {
		t.Errorf("%s (%s, left %v before DEL): DEL did not restore the state (- before ADD, + after DEL):\n%s",
			what, outcome, left, diff)
		k.before = after // report later points' residue on its own
	}
	if err := k.cw.del(k.list, k.rt(containerID)); err != nil {
		t.Errorf("%s: second DEL: %v", what, err)
	}
	if diff := nstest.Diff(after, k.dump()); diff != "" {
		t.Errorf("%s: second DEL changed the state (- after first DEL, + after second):\n%s", what, diff)
	}
	return outcome, left
}

// TestCNIKilledMidAddThenDelAtMilestones is TestCNIKilledMidAddThenDel with
// kill points that do not depend on timing. The plugin runs under strace,
// which delays every fsync by half a second (a record write syncs its temp
// file before renaming it into place), and is SIGKILLed (by its PID) as soon
// as a milestone of the ADD is visible from outside: the n-th record temp
// file, the host veth, the veth on the bridge, the from-guest ifb, the
// antispoof entries. After each kill, DEL must restore everything.
func TestCNIKilledMidAddThenDelAtMilestones(t *testing.T) {
	straceBin, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed (apt-get install strace): the milestone kill points use its delay injection")
	}
	t.Parallel()
	cw, _ := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	dataDir := t.TempDir()
	list, _ := robustConflist(t, dataDir)
	stdin := robustPluginStdin(t, list, robustBandwidth)
	ctr := nstest.New(t, "ctr")
	rt := func(id string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: ctr.Path(), IfName: "eth0",
			CapabilityArgs: map[string]any{"bandwidth": robustBandwidth}}
	}
	dump := func() string { return cw.robustDump(t, dataDir, ctr) }
	kc := &robustKillCheck{t: t, cw: cw, list: list, rt: rt, dump: dump, before: dump()}
	wrapper := []string{straceBin, "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:delay_enter=500ms", "--"}

	linkUp := func(name string) (string, bool) {
		out, err := cw.dom0.Try("ip", "-o", "link", "show", "dev", name)
		return out, err == nil
	}
	milestones := []struct {
		what    string
		records bool // a milestone the implementation may not have
		reached func(hv string, temps int) bool
	}{
		{"1st record temp file", true, func(_ string, n int) bool { return n >= 1 }},
		{"2nd record temp file", true, func(_ string, n int) bool { return n >= 2 }},
		{"3rd record temp file", true, func(_ string, n int) bool { return n >= 3 }},
		{"host veth exists", false, func(hv string, _ int) bool { _, ok := linkUp(hv); return ok }},
		{"host veth on brlab", false, func(hv string, _ int) bool { out, _ := linkUp(hv); return strings.Contains(out, " master brlab ") }},
		{"from-guest ifb exists", false, func(hv string, _ int) bool { _, ok := linkUp(shape.PortIfb(hv)); return ok }},
		{"antispoof entries", false, func(hv string, _ int) bool {
			out, _ := cw.dom0.Try("nft", "list", "ruleset")
			return strings.Contains(out, `"`+hv+`"`)
		}},
	}
	var summary strings.Builder
	for i, m := range milestones {
		id := fmt.Sprintf("milestone%d", i)
		hv := cniHostVeth(id, "eth0")
		p := cw.startPlugin(t, stdin, "ADD", id, ctr, wrapper)
		var r robustRun
		done := make(chan struct{})
		go func() { r = p.finish(t); close(done) }()
		temps := map[string]bool{}
		reached := false
		deadline := time.Now().Add(60 * time.Second)
	poll:
		for {
			select {
			case <-done:
				break poll
			default:
			}
			robustRecordTemps(cw, hv, temps)
			if m.reached(hv, len(temps)) {
				reached = true
				// The plugin is strace's only child.
				if pid := robustChild(p.cmd.Process.Pid); pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: ADD still running after 60 s; killing it", m.what)
				if pid := robustChild(p.cmd.Process.Pid); pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
		<-done
		if !reached {
			if m.records && r.code == 0 && !r.killed {
				t.Logf("%s: ADD completed without it (fewer record writes): nothing to kill", m.what)
			} else {
				t.Errorf("%s: never reached; the ADD: %s", m.what, r)
			}
		}
		outcome, left := kc.delAfter("kill at "+m.what, id, r)
		fmt.Fprintf(&summary, "  %-22s %-17s left before DEL: %s\n", m.what+":", outcome, strings.Join(left, " "))
	}
	t.Logf("milestone kills:\n%s", summary.String())
}

// robustRecordTemps adds to seen the temp files of records about the port
// hv under brouter's run and state directories (state.Store writes NAME as
// .NAME.tmp*, then renames it).
func robustRecordTemps(cw *cniWorld, hv string, seen map[string]bool) {
	for _, root := range []string{cw.runDir, cw.stateDir} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "."+hv) && strings.Contains(d.Name(), ".tmp") {
				seen[p] = true
			}
			return nil
		})
	}
}

// robustChild is the first child of process pid (0 if none).
func robustChild(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	var child int
	if _, err := fmt.Sscan(string(b), &child); err != nil {
		return 0
	}
	return child
}

// mustParseResult parses a plugin's stdout as a CNI 1.x result.
func mustParseResult(t *testing.T, stdout string) types.Result {
	t.Helper()
	res, err := current.NewResult([]byte(stdout))
	if err != nil {
		t.Fatalf("parse result %q: %v", stdout, err)
	}
	return res
}

var cnitoolBuild struct {
	once sync.Once
	path string
	err  error
}

// cnitoolBinary installs cnitool at the version of
// github.com/containernetworking/cni that go.mod requires, once per run.
func cnitoolBinary(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	cnitoolBuild.once.Do(func() {
		goTool := "go"
		if _, err := exec.LookPath(goTool); err != nil {
			goTool = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(goTool, "list", "-m", "-f", "{{.Version}}", "github.com/containernetworking/cni")
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			cnitoolBuild.err = fmt.Errorf("go list -m github.com/containernetworking/cni: %v", err)
			return
		}
		version := strings.TrimSpace(string(out))
		gobin := filepath.Join(binDir, "cnitool-bin")
		cmd = exec.Command(goTool, "install", "github.com/containernetworking/cni/cnitool@"+version)
		cmd.Dir = binDir // outside the module: pkg@version ignores go.mod anyway
		cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			cnitoolBuild.err = fmt.Errorf("go install cnitool@%s: %v\n%s", version, err, msg)
			return
		}
		cnitoolBuild.path = filepath.Join(gobin, "cnitool")
	})
	if cnitoolBuild.err != nil {
		t.Fatal(cnitoolBuild.err)
	}
	return cnitoolBuild.path
}

// cnitoolContainerID is the container ID cnitool derives from a netns path.
func cnitoolContainerID(netnsPath string) string {
	s := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// cnitoolCache arranges for the removal of the result cache files cnitool
// writes for these containers (it always uses libcni's default cache,
// /var/lib/cni), and of the cache directories if this test created them.
func cnitoolCache(t *testing.T, network string, containerIDs ...string) {
	t.Helper()
	const dir = "/var/lib/cni"
	var made []string
	for _, d := range []string{dir, filepath.Join(dir, "results")} {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			made = append(made, d)
		}
	}
	t.Cleanup(func() {
		for _, id := range containerIDs {
			f := filepath.Join(dir, "results", network+"-"+id+"-eth0")
			if err := os.Remove(f); err == nil {
				t.Logf("removed cnitool's cache file %s (DEL did not)", f)
			}
		}
		for i := len(made) - 1; i >= 0; i-- {
			_ = os.Remove(made[i]) // only if empty
		}
	})
}

// TestCNIWithCnitool drives the plugin with the real cnitool, as a user
// would (NETCONFPATH, CNI_PATH, CAP_ARGS; `cnitool add|check|del NAME
// NETNS` run in dom0), for two containers, one of them shaped. After add,
// each container has its result's address and default route, pings the
// gateway and the other container, has antispoof entries and (the shaped
// one) HTB and an ifb; check passes and notices a removed address; after
// del, and del again, dom0, brouter's records, host-local's allocations and
// the containers are as before.
func TestCNIWithCnitool(t *testing.T) {
	t.Parallel()
	tool := cnitoolBinary(t)
	cw, _ := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	dataDir := t.TempDir()
	_, raw := robustConflist(t, dataDir)
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-lab.conflist"), []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	ctrs := []*nstest.NS{nstest.New(t, "ctr"), nstest.New(t, "ctr")}
	ids := []string{cnitoolContainerID(ctrs[0].Path()), cnitoolContainerID(ctrs[1].Path())}
	cnitoolCache(t, "lab", ids...)
	caps := []string{`{"bandwidth": {"ingressRate": 10000000, "ingressBurst": 800000, "egressRate": 10000000, "egressBurst": 800000}}`, ""}
	before := cw.robustDump(t, dataDir, ctrs...)

	cnitool := func(i int, args ...string) (int, string, string) {
		t.Helper()
		cmd := cw.dom0.Cmd(append([]string{tool}, args...)...)
		cmd.Env = append([]string{
			"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
			"NETCONFPATH=" + confDir,
			"CNI_PATH=" + cw.binDir,
		}, cw.env...)
		if caps[i] != "" {
			cmd.Env = append(cmd.Env, "CAP_ARGS="+caps[i])
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		code := 0
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("cnitool %s: %v", strings.Join(args, " "), err)
			}
			code = ee.ExitCode()
		}
		return code, out.String(), errb.String()
	}

	addrs := make([]string, len(ctrs))
	for i, c := range ctrs {
		code, out, errs := cnitool(i, "add", "lab", c.Path())
		if code != 0 {
			t.Fatalf("cnitool add lab %s: exit %d: %s %s", c.Path(), code, out, errs)
		}
		var res current.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("cnitool add: result %q: %v", out, err)
		}
		addrs[i] = robustMustBeAttached(t, cw, c, ids[i], &res, caps[i] != "")
		t.Logf("container %d: %s", i, addrs[i])
	}
	if addrs[0] == addrs[1] {
		t.Errorf("both containers got %s", addrs[0])
	}
	mustPing(t, ctrs[0], "ctr0", gatewayIP)
	mustPing(t, ctrs[1], "ctr1", gatewayIP)
	mustPing(t, ctrs[0], "ctr0", addrs[1])
	mustPing(t, ctrs[1], "ctr1", addrs[0])

	for i, c := range ctrs {
		if code, out, errs := cnitool(i, "check", "lab", c.Path()); code != 0 {
			t.Errorf("cnitool check lab %s: exit %d: %s %s", c.Path(), code, out, errs)
		}
	}
	ctrs[1].Exec(t, "ip", "addr", "flush", "dev", "eth0")
	if code, _, errs := cnitool(1, "check", "lab", ctrs[1].Path()); code == 0 {
		t.Errorf("cnitool check after flushing the container's address: exit 0, want a failure")
	} else {
		t.Logf("cnitool check after flushing the address: exit %d: %s", code, strings.SplitN(strings.TrimSpace(errs), "\n", 2)[0])
	}

	for i, c := range ctrs {
		for _, again := range []string{"", " again"} {
			if code, out, errs := cnitool(i, "del", "lab", c.Path()); code != 0 {
				t.Errorf("cnitool del%s lab %s: exit %d: %s %s", again, c.Path(), code, out, errs)
			}
		}
	}
	if d := nstest.Diff(before, cw.robustDump(t, dataDir, ctrs...)); d != "" {
		t.Errorf("after cnitool del the state differs (- before add, + after del):\n%s", d)
	}
}

// TestCNIBandwidthBelowMinimum gives ADD bandwidths the shaper cannot do
// (below shape.MinRate, in either direction): the plugin must refuse with
// CNI error 7 (invalid network config) and leave nothing behind; the
// minimum itself works.
func TestCNIBandwidthBelowMinimum(t *testing.T) {
	t.Parallel()
	cw, _ := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	dataDir := t.TempDir()
	list, _ := robustConflist(t, dataDir)
	ctr := nstest.New(t, "ctr")
	before := cw.robustDump(t, dataDir, ctr)

	cases := []struct {
		what string
		bw   map[string]any
	}{
		{"ingressRate 1000 bit/s", map[string]any{"ingressRate": 1000, "ingressBurst": 8000}},
		{"egressRate 1000 bit/s", map[string]any{"egressRate": 1000, "egressBurst": 8000}},
		{fmt.Sprintf("both rates %d bit/s", shape.MinRate-1), map[string]any{"ingressRate": shape.MinRate - 1, "egressRate": shape.MinRate - 1}},
	}
	for i, c := range cases {
		id := fmt.Sprintf("slow%d", i)
		r := cw.runPlugin(t, robustPluginStdin(t, list, c.bw), "ADD", id, ctr, -1)
		if r.killed || r.code == 0 {
			t.Errorf("%s: ADD did not fail: %s", c.what, r)
			_ = cw.del(list, &libcni.RuntimeConf{ContainerID: id, NetNS: ctr.Path(), IfName: "eth0"})
			continue
		}
		var e types.Error
		if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.Code == 0 {
			t.Errorf("%s: stdout is not a CNI error: %s", c.what, r)
		} else if e.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("%s: CNI error code %d (%s %s), want %d (invalid network config)", c.what, e.Code, e.Msg, e.Details, types.ErrInvalidNetworkConfig)
		} else {
			t.Logf("%s: code %d: %s %s", c.what, e.Code, e.Msg, e.Details)
		}
		if d := nstest.Diff(before, cw.robustDump(t, dataDir, ctr)); d != "" {
			t.Errorf("%s: the failed ADD left something (- before, + after):\n%s", c.what, d)
			before = cw.robustDump(t, dataDir, ctr)
		}
	}

	// The minimum itself is accepted and shapes.
	atMin := map[string]any{"ingressRate": shape.MinRate, "egressRate": shape.MinRate}
	r := cw.runPlugin(t, robustPluginStdin(t, list, atMin), "ADD", "slowmin", ctr, -1)
	if r.killed || r.code != 0 {
		t.Errorf("ADD at the minimum rate %d bit/s: %s", shape.MinRate, r)
	} else {
		res, err := current.NewResultFromResult(mustParseResult(t, r.stdout))
		if err != nil {
			t.Fatal(err)
		}
		robustMustBeAttached(t, cw, ctr, "slowmin", res, true)
	}
	if err := cw.del(list, &libcni.RuntimeConf{ContainerID: "slowmin", NetNS: ctr.Path(), IfName: "eth0"}); err != nil {
		t.Errorf("DEL slowmin: %v", err)
	}
	if d := nstest.Diff(before, cw.robustDump(t, dataDir, ctr)); d != "" {
		t.Errorf("ADD+DEL at the minimum rate left something (- before, + after):\n%s", d)
	}
}
