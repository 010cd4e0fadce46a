package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
	"github.com/brouter/brouter/shared/state"
)

// Many guests of every kind start at once on one network, then stop at
// once (issue 10, item 6): 40 QEMU taps (qemu-ifup, a port rule each), 30
// containers (the CNI plugin, brouter's own addresses) and 30 Xen vifs
// (vif-brouter online, ip=), each program called as its caller calls it.
// None may fail (they used to time out on the network's lock); afterwards
// every port is on the bridge and guarded, and after the detaches dom0 is as
// it was. Latencies are logged, never asserted.

const (
	mixTaps, mixCtrs, mixVifs = 40, 30, 30
	mixBridge                 = "brmix"
)

// mixConfig is network "mix" (nat, nftables, a /22) with a port rule per
// tap. The static addresses (taps' and vifs') lie in the first quarter of
// the /22, outside the allocator's pool (its second quarter). Containers
// get an IPv6 address too, from the allocator's IPv6 pool.
func mixConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[network.mix]\nbridge = %q\naddress = \"10.98.96.1/22\"\naddress6 = \"fd00:96::1/64\"\nmode = \"nat\"\nfirewall = \"nftables\"\n[network.mix.dhcp6]\nipv6_mode = \"none\"\n", mixBridge)
	for i := range mixTaps {
		fmt.Fprintf(&b, "[[network.mix.port]]\nname = %q\nmac = \"00:16:3e:01:00:%02x\"\nips = [\"10.98.96.%d\"]\n", mixTap(i), i, 100+i)
	}
	return b.String()
}

func mixTap(i int) string { return fmt.Sprintf("tapmix%d", i) }

// mixRun is one program run of the mix: what, how long, how it ended.
type mixRun struct {
	what string
	took time.Duration
	err  error
}

// mixHost is a vifHost (dom0, xenstore, vif-brouter) whose dom0 also holds
// QEMU taps and containers' namespaces.
type mixHost struct {
	*vifHost
	guests *nstest.NS   // the vifs' guests (one namespace, a veth each)
	ctrs   []*nstest.NS // one namespace per container
	vifs   []xvif
	ifup   string // qemu-ifup
	ifdown string // qemu-ifdown (a link to it)
	cni    string // the CNI plugin
	stats  string // BROUTER_LOCK_STATS of every program run
}

// env is what every program of the mix gets besides its caller's variables.
func (h *mixHost) env() []string {
	return []string{"BROUTER_CONFIG=" + h.config, "BROUTER_RUN_DIR=" + h.runDir, "BROUTER_STATE_DIR=" + h.stateDir,
		state.EnvLockStats + "=" + h.stats}
}

// newMixHost starts network mix and makes the guests' devices; before is
// dom0's dump before they were made.
func newMixHost(t *testing.T) (h *mixHost, before string) {
	t.Helper()
	h = &mixHost{vifHost: newVifHost(t, worldOpts{}), ifup: binary(t, "qemu-ifup"), cni: binary(t, "brouter")}
	h.ifdown = h.config + ".qemu-ifdown"
	h.stats = filepath.Join(t.TempDir(), "lockstats")
	if err := os.Symlink(h.ifup, h.ifdown); err != nil {
		t.Fatal(err)
	}
	h.writeConfig(mixConfig())
	h.mustRun(0, "start", "net=mix")
	h.anchor(t, mixBridge)
	before = h.fullDump(t)
	var taps []string
	for i := range mixTaps {
		taps = append(taps, "tuntap add mode tap name "+mixTap(i))
	}
	h.ipBatch(t, taps...)
	h.guests = nstest.New(t, "mixg")
	for i := range mixVifs {
		v := newXvif(10+i, 0)
		h.vifs = append(h.vifs, v)
		nstest.Veth(t, h.dom0, v.name(), h.guests, fmt.Sprintf("eth%d", i))
		h.writeBackend(v, mixBridge, map[string]string{"ip": fmt.Sprintf("10.98.96.%d", 10+i)})
	}
	for range mixCtrs {
		h.ctrs = append(h.ctrs, nstest.New(t, "mixc"))
	}
	return h, before
}

// removeDevices deletes the taps and vifs, as QEMU and netback do after
// the scripts ran.
func (h *mixHost) removeDevices(t *testing.T) {
	t.Helper()
	var cmds []string
	for i := range mixTaps {
		cmds = append(cmds, "link del "+mixTap(i))
	}
	for _, v := range h.vifs {
		cmds = append(cmds, "link del "+v.name())
	}
	h.ipBatch(t, cmds...)
}

// ipBatch runs ip commands in dom0, in one ip process.
func (h *mixHost) ipBatch(t *testing.T, cmds ...string) {
	t.Helper()
	cmd := h.dom0.Cmd("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v: %s", err, out)
	}
}

// ports are the host-side names of every port of the mix.
func (h *mixHost) ports() []string {
	var out []string
	for i := range mixTaps {
		out = append(out, mixTap(i))
	}
	for _, v := range h.vifs {
		out = append(out, v.name())
	}
	for _, c := range h.ctrs {
		out = append(out, cniHostVeth(c.Name(), "eth0"))
	}
	return out
}

// cniCall runs the CNI plugin in dom0 as a runtime does: CNI_* variables,
// the network's config on stdin.
func (h *mixHost) cniCall(command string, ctr *nstest.NS) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := h.dom0.CmdContext(ctx, h.cni)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND=" + command, "CNI_CONTAINERID=" + ctr.Name(),
		"CNI_NETNS=" + ctr.Path(), "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}, h.env()...)
	cmd.Stdin = strings.NewReader(`{"cniVersion": "1.1.0", "name": "mix", "type": "brouter", "network": "mix"}`)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("brouter %s %s: %v: %s", command, ctr.Name(), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// qemuCall runs qemu-ifup (or qemu-ifdown) for a tap as QEMU does.
func (h *mixHost) qemuCall(prog, tap string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := h.dom0.CmdContext(ctx, prog, tap)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, h.env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", prog, tap, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// vifCall runs vif-brouter online or offline for a vif as libxl does.
func (h *mixHost) vifCall(cmd string, v xvif) error {
	r, err := h.vifCmd(h.libxlEnv(v, "vif", state.EnvLockStats+"="+h.stats), cmd, "type_if=vif")
	if err == nil && r.code != 0 {
		err = fmt.Errorf("%s", r)
	}
	if err == nil && cmd == "online" {
		if s, _ := h.key(v, "hotplug-status"); s != "connected" {
			err = fmt.Errorf("%s: hotplug-status %q after online", v.name(), s)
		}
	}
	return err
}

// all runs every guest's program (up or down) at once and returns the runs.
func (h *mixHost) all(up bool) []mixRun {
	var jobs []mixRun
	var fns []func() error
	qemu, cni, vif := h.ifdown, "DEL", "offline"
	if up {
		qemu, cni, vif = h.ifup, "ADD", "online"
	}
	for i := range mixTaps {
		jobs = append(jobs, mixRun{what: "qemu " + mixTap(i)})
		fns = append(fns, func() error { return h.qemuCall(qemu, mixTap(i)) })
	}
	for _, c := range h.ctrs {
		jobs = append(jobs, mixRun{what: "cni " + c.Name()})
		fns = append(fns, func() error { return h.cniCall(cni, c) })
	}
	for _, v := range h.vifs {
		jobs = append(jobs, mixRun{what: "vif " + v.name()})
		fns = append(fns, func() error { return h.vifCall(vif, v) })
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range jobs {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			jobs[i].err = fns[i]()
			jobs[i].took = time.Since(t0)
		})
	}
	close(start)
	wg.Wait()
	return jobs
}

// mixReport fails the test for every failed run and logs the latencies,
// and the programs' lock waits and holds (then starts their statistics
// afresh).
func (h *mixHost) report(t *testing.T, what string, runs []mixRun, wall time.Duration) {
	t.Helper()
	var ds []time.Duration
	failed := 0
	for _, r := range runs {
		ds = append(ds, r.took)
		if r.err != nil {
			failed++
			t.Errorf("%s: %v", r.what, r.err)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1)+0.5)].Round(time.Millisecond) }
	slow := slices.Clone(runs)
	sort.Slice(slow, func(i, j int) bool { return slow[i].took > slow[j].took })
	var names []string
	for _, r := range slow[:3] {
		names = append(names, fmt.Sprintf("%s %v", r.what, r.took.Round(time.Millisecond)))
	}
	t.Logf("%d %s at once: %d failed, p50 %v, p99 %v, max %v, wall %v; slowest: %s",
		len(runs), what, failed, q(0.5), q(0.99), q(1), wall.Round(time.Millisecond), strings.Join(names, ", "))
	stats, err := state.ReadLockStats(h.stats)
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{state.LockSummaryHeader}
	for _, s := range state.SummarizeLocks(stats) {
		lines = append(lines, s.String())
	}
	t.Logf("locks:\n%s", strings.Join(lines, "\n"))
	if err := os.Remove(h.stats); err != nil {
		t.Fatal(err)
	}
}

func TestParallelMixedAttachDetach(t *testing.T) {
	h, before := newMixHost(t)
	ports := h.ports()

	t0 := time.Now()
	h.report(t, "attaches (40 qemu-ifup, 30 CNI ADD, 30 vif online)", h.all(true), time.Since(t0))
	onBridge := h.dom0.Exec(t, "ip", "-o", "link", "show", "master", mixBridge)
	guarded := h.dom0.Exec(t, "nft", "list", "set", "bridge", "brouter-mix", "as_ports")
	for _, p := range ports {
		if !strings.Contains(onBridge, " "+p+":") && !strings.Contains(onBridge, " "+p+"@") {
			t.Errorf("%s is not on %s", p, mixBridge)
		}
		if !strings.Contains(guarded, `"`+p+`"`) {
			t.Errorf("%s is not guarded (not in as_ports)", p)
		}
	}
	if recs, _ := os.ReadDir(h.runDir + "/ports/mix"); len(recs) != len(ports) {
		t.Errorf("%d port records for %d ports", len(recs), len(ports))
	}

	t0 = time.Now()
	h.report(t, "detaches (qemu-ifdown, CNI DEL, vif offline)", h.all(false), time.Since(t0))
	if out := h.dom0.Exec(t, "ip", "-o", "link", "show", "master", mixBridge); strings.Count(out, "\n") != 1 {
		t.Errorf("ports left on %s besides the anchor:\n%s", mixBridge, out)
	}
	h.noRecords(t, "after the detaches", ports...)
	for _, c := range h.ctrs {
		if _, err := c.Try("ip", "-o", "link", "show", "eth0"); err == nil {
			t.Errorf("container %s still has eth0", c.Name())
		}
	}
	h.removeDevices(t)
	h.sameAfterOffline(t, "after the detaches", before)
	if out, _ := h.dom0.Try("nft", "list", "set", "bridge", "brouter-mix", "as_ports"); strings.Contains(out, "elements") {
		t.Errorf("guarded ports left:\n%s", out)
	}
}
