package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/brouter/brouter/shared/nstest"
)

// cniEnv is an invoke.Exec that adds the world's BROUTER_* variables to
// every plugin execution (libcni passes os.Environ() plus the CNI_* ones),
// so tests need no process-wide Setenv and can run in parallel.
type cniEnv struct {
	invoke.DefaultExec
	env []string
}

func (e *cniEnv) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	return e.DefaultExec.ExecPlugin(ctx, path, stdin, append(environ, e.env...))
}

// cniWorld is a world plus a CNI plugin directory (brouter + host-local)
// and a libcni runtime that runs the plugins inside dom0.
type cniWorld struct {
	*world
	binDir string
	cni    *libcni.CNIConfig
	exec   invoke.Exec
	env    []string
}

func newCNIWorld(t *testing.T) *cniWorld {
	t.Helper()
	return newCNIWorldWith(t, worldOpts{})
}

// newCNIWorldWith is newCNIWorld with an outside namespace or guests.
func newCNIWorldWith(t *testing.T, o worldOpts) *cniWorld {
	t.Helper()
	w := newWorld(t, o)
	cw := &cniWorld{world: w, binDir: t.TempDir()}
	if err := os.Symlink(binary(t, "brouter"), filepath.Join(cw.binDir, "brouter")); err != nil {
		t.Fatal(err)
	}
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goTool, "build", "-o", filepath.Join(cw.binDir, "host-local"),
		"github.com/containernetworking/plugins/plugins/ipam/host-local")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build host-local: %v\n%s", err, out)
	}
	cw.env = []string{"BROUTER_CONFIG=" + w.config, "BROUTER_RUN_DIR=" + w.runDir, "BROUTER_STATE_DIR=" + w.stateDir}
	ex := &cniEnv{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}, env: cw.env}
	cw.exec = ex
	cw.cni = libcni.NewCNIConfigWithCacheDir([]string{cw.binDir}, filepath.Join(t.TempDir(), "cache"), ex)
	return cw
}

// in runs fn with this goroutine's thread in dom0, so the plugins libcni
// starts run there: dom0 is their host namespace.
func (cw *cniWorld) in(fn func() error) error { return cw.dom0.Do(fn) }

func (cw *cniWorld) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := cw.in(func() (err error) {
		res, err = cw.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (cw *cniWorld) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return cw.in(func() error { return cw.cni.DelNetworkList(context.Background(), list, rt) })
}

func (cw *cniWorld) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return cw.in(func() error { return cw.cni.CheckNetworkList(context.Background(), list, rt) })
}

// plugin runs the brouter binary directly in dom0, the way a runtime does,
// and returns the exit code and stdout (a CNI error's JSON on failure).
func (cw *cniWorld) plugin(stdin string, env ...string) (int, string) {
	cw.t.Helper()
	cmd := cw.dom0.Cmd(filepath.Join(cw.binDir, "brouter"))
	cmd.Env = append(append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH=" + cw.binDir}, cw.env...), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	code := 0
	if err := cmd.Run(); err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return code, out.String()
}

// cniNeutral removes from a dump what the kernel, not brouter, changes on a
// bridge once a port has been up on it: the carrier flags and routes'
// "linkdown" (an empty bridge loses its carrier a moment after its last port
// goes), the root qdisc, and the IPv6 link-local address and route the
// bridge gets when it first has carrier.
func cniNeutral(dump, bridge string) string {
	qdisc := regexp.MustCompile(` qdisc=[a-z_]+`)
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "addr "+bridge+" inet6 fe80:"),
			strings.HasPrefix(l, "route-6 fe80::/64 dev "+bridge+" "):
			continue
		case strings.HasPrefix(l, "link "+bridge+" "):
			l = strings.Replace(l, "NO-CARRIER,", "", 1)
		}
		l = strings.ReplaceAll(l, " linkdown", "")
		out = append(out, qdisc.ReplaceAllString(l, ""))
	}
	return strings.Join(out, "\n")
}

func cniConflist(t *testing.T, dataDir string) (*libcni.NetworkConfigList, string) {
	t.Helper()
	return cniConflistWith(t, dataDir, "")
}

// cniConflistWith is cniConflist with extra keys for the plugin's config
// (e.g. `"capabilities": {...},`).
func cniConflistWith(t *testing.T, dataDir, extra string) (*libcni.NetworkConfigList, string) {
	t.Helper()
	s := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "lab",
  "plugins": [{
    "type": "brouter",
    "network": "lab",%s
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "10.98.98.0/24", "rangeStart": "10.98.98.100", "rangeEnd": "10.98.98.150", "gateway": "10.98.98.1"}]],
      "dataDir": %q
    }
  }]
}`, extra, dataDir)
	list, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return list, s
}

func TestCNIAddCheckDel(t *testing.T) {
	t.Parallel()
	cw, dump := newLabCNIWorld(t)
	// Start the network first so the comparison is about the attachments.
	cw.mustRun(0, "start", "net=lab")
	before := dump()

	dataDir := t.TempDir()
	list, _ := cniConflist(t, dataDir)
	if err := cw.in(func() error { return cw.cni.GetStatusNetworkList(context.Background(), list) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	ctrs := []*nstest.NS{nstest.New(t, "ctr"), nstest.New(t, "ctr")}
	rts := make([]*libcni.RuntimeConf, len(ctrs))
	addrs := make([]string, len(ctrs))
	lo, hi := netip.MustParseAddr("10.98.98.100"), netip.MustParseAddr("10.98.98.150")
	for i, c := range ctrs {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ctr%d-%s", i, c.Name()), NetNS: c.Path(), IfName: "eth0"}
		res, err := cw.add(list, rts[i])
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if len(res.IPs) != 1 {
			t.Fatalf("ADD %d: IPs %v", i, res.IPs)
		}
		a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		if a.Less(lo) || hi.Less(a) {
			t.Fatalf("ADD %d: address %s not in range", i, a)
		}
		if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != c.Path() {
			b, _ := json.Marshal(res)
			t.Fatalf("ADD %d: interfaces: %s", i, b)
		}
		addrs[i] = a.String()
		t.Logf("container %d: %s on %s", i, addrs[i], res.Interfaces[0].Name)
	}
	if addrs[0] == addrs[1] {
		t.Fatalf("duplicate address %s", addrs[0])
	}
	mustPing(t, ctrs[0], "ctr0", addrs[1])
	mustPing(t, ctrs[1], "ctr1", addrs[0])
	mustPing(t, ctrs[0], "ctr0", gatewayIP)
	mustPing(t, ctrs[1], "ctr1", gatewayIP)

	for i := range ctrs {
		if err := cw.check(list, rts[i]); err != nil {
			t.Errorf("CHECK %d: %v", i, err)
		}
	}
	// CHECK notices a removed container address.
	ctrs[0].Exec(t, "ip", "addr", "flush", "dev", "eth0")
	if err := cw.check(list, rts[0]); err == nil {
		t.Errorf("CHECK after flushing the container's address: want an error")
	}

	for i := range ctrs {
		if err := cw.del(list, rts[i]); err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
		if err := cw.del(list, rts[i]); err != nil {
			t.Errorf("DEL %d again: %v", i, err)
		}
	}
	// DEL with the netns gone and with an empty CNI_NETNS.
	gone := &libcni.RuntimeConf{ContainerID: "never-added", NetNS: "/run/netns/does-not-exist", IfName: "eth0"}
	if err := cw.del(list, gone); err != nil {
		t.Errorf("DEL with a deleted netns: %v", err)
	}
	if err := cw.del(list, &libcni.RuntimeConf{ContainerID: "never-added", IfName: "eth0"}); err != nil {
		t.Errorf("DEL with empty CNI_NETNS: %v", err)
	}
	// host-local released both addresses (only its bookkeeping files remain).
	cleanAfterDel(t, dataDir, before, dump())
}

func TestCNIBadInput(t *testing.T) {
	t.Parallel()
	cw, dump := newLabCNIWorld(t)
	before := dump()
	ctr := nstest.New(t, "ctr")
	list, raw := cniConflist(t, t.TempDir())

	// Through libcni: a 16-character interface name is refused.
	if _, err := cw.add(list, &libcni.RuntimeConf{ContainerID: "c1", NetNS: ctr.Path(), IfName: "abcdefghijklmnop"}); err == nil {
		t.Errorf("ADD with a 16-character CNI_IFNAME: want an error")
	}

	// Straight to the plugin, as a runtime without libcni's checks would.
	var plugin map[string]any
	var lst map[string]any
	if err := json.Unmarshal([]byte(raw), &lst); err != nil {
		t.Fatal(err)
	}
	plugin = lst["plugins"].([]any)[0].(map[string]any)
	plugin["cniVersion"], plugin["name"] = "1.1.0", "lab"
	one, _ := json.Marshal(plugin)
	env := func(cmd, ifname string) []string {
		return []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=c2", "CNI_NETNS=" + ctr.Path(), "CNI_IFNAME=" + ifname}
	}
	cases := []struct {
		what, stdin string
		env         []string
		wantCode    uint
	}{
		{"malformed JSON", `{"cniVersion": "1.1.0", "name": `, env("ADD", "eth0"), types.ErrDecodingFailure},
		{"16-character CNI_IFNAME", string(one), env("ADD", "abcdefghijklmnop"), 0},
		{"unknown cniVersion", strings.Replace(string(one), `"1.1.0"`, `"9.9.9"`, 1), env("ADD", "eth0"), types.ErrIncompatibleCNIVersion},
		{"missing CNI_NETNS", string(one), []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c3", "CNI_IFNAME=eth0"}, types.ErrInvalidEnvironmentVariables},
		{"unknown network", strings.Replace(string(one), `"network":"lab"`, `"network":"nope"`, 1), env("ADD", "eth0"), types.ErrInvalidNetworkConfig},
	}
	for _, c := range cases {
		code, out := cw.plugin(c.stdin, c.env...)
		if code == 0 {
			t.Errorf("%s: exit 0, want an error; stdout %s", c.what, out)
			continue
		}
		var e types.Error
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Errorf("%s: stdout is not a CNI error: %q", c.what, out)
			continue
		}
		t.Logf("%s: code %d: %s %s", c.what, e.Code, e.Msg, e.Details)
		if c.wantCode != 0 && e.Code != c.wantCode {
			t.Errorf("%s: code %d, want %d (%s)", c.what, e.Code, c.wantCode, out)
		}
	}
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after bad input differs (- before, + after):\n%s", d)
	}
}

// cniHostVeth is the plugin's host veth name for a container (the plugin's
// hostVethName).
func cniHostVeth(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return "brv" + hex.EncodeToString(h[:])[:12]
}

func TestCNIGC(t *testing.T) {
	t.Parallel()
	cw, dump := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	before := dump()
	dataDir := t.TempDir()
	list, _ := cniConflist(t, dataDir)

	ctrs := []*nstest.NS{nstest.New(t, "ctr"), nstest.New(t, "ctr"), nstest.New(t, "ctr")}
	rts := make([]*libcni.RuntimeConf, len(ctrs))
	addrs := make([]string, len(ctrs))
	for i, c := range ctrs {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("gc%d-%s", i, c.Name()), NetNS: c.Path(), IfName: "eth0"}
		res, err := cw.add(list, rts[i])
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		addrs[i] = res.IPs[0].Address.IP.String()
	}
	gone := cniHostVeth(rts[2].ContainerID, "eth0")
	if set := cw.dom0.Exec(t, "nft", "list", "ruleset"); !strings.Contains(set, gone) {
		t.Fatalf("no antispoof entries for %s before GC:\n%s", gone, set)
	}

	// A runtime that lost its cache (a fresh libcni cache dir) only has the
	// plugins' GC to remove the third container: libcni's own cache-driven
	// DELs do nothing here.
	gcCNI := libcni.NewCNIConfigWithCacheDir([]string{cw.binDir}, t.TempDir(), cw.exec)
	gcArgs := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
		{ContainerID: rts[0].ContainerID, IfName: "eth0"},
		{ContainerID: rts[1].ContainerID, IfName: "eth0"},
	}}
	gc := func() error {
		return cw.in(func() error { return gcCNI.GCNetworkList(context.Background(), list, gcArgs) })
	}
	if err := gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if out, err := cw.dom0.Try("ip", "link", "show", gone); err == nil {
		t.Errorf("host veth %s still there after GC: %s", gone, out)
	}
	if _, err := os.Stat(filepath.Join(cw.runDir, "ports", "lab", gone+".json")); !os.IsNotExist(err) {
		t.Errorf("port record of %s after GC: %v", gone, err)
	}
	if set := cw.dom0.Exec(t, "nft", "list", "ruleset"); strings.Contains(set, gone) || strings.Contains(set, addrs[2]+" ") {
		t.Errorf("antispoof entries of %s (%s) left after GC:\n%s", gone, addrs[2], set)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "lab", addrs[2])); !os.IsNotExist(err) {
		t.Errorf("host-local still holds %s after GC: %v", addrs[2], err)
	}
	for i := range 2 {
		if _, err := os.Stat(filepath.Join(dataDir, "lab", addrs[i])); err != nil {
			t.Errorf("host-local lost valid %s: %v", addrs[i], err)
		}
		mustPing(t, ctrs[i], fmt.Sprintf("ctr%d", i), gatewayIP)
		if err := cw.check(list, rts[i]); err != nil {
			t.Errorf("CHECK %d after GC: %v", i, err)
		}
	}
	after := dump()
	if err := gc(); err != nil {
		t.Fatalf("GC again: %v", err)
	}
	if d := nstest.Diff(after, dump()); d != "" {
		t.Errorf("second GC changed dom0 (- first, + second):\n%s", d)
	}

	for i := range ctrs {
		if err := cw.del(list, rts[i]); err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	cleanAfterDel(t, dataDir, before, dump())
}

// TestCNIFailedAddCleansUp makes ADD fail after the IPAM allocation and the
// veth (a multicast runtime MAC the kernel refuses; a bandwidth below the
// shaper's minimum, which fails inside vnet's Attach once the port is on the
// bridge) and checks that nothing is left: dom0, host-local's allocations,
// brouter's records, the container's namespace.
func TestCNIFailedAddCleansUp(t *testing.T) {
	t.Parallel()
	cw, dump := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	before := dump()
	dataDir := t.TempDir()
	_, raw := cniConflist(t, dataDir)
	raw = strings.Replace(raw, `"type": "brouter",`, `"type": "brouter", "capabilities": {"mac": true, "bandwidth": true},`, 1)
	list, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		what string
		caps map[string]any
	}{
		{"multicast runtime MAC", map[string]any{"mac": "03:00:00:00:00:01"}},
		{"bandwidth below the minimum", map[string]any{"bandwidth": map[string]any{"ingressRate": 1, "ingressBurst": 8, "egressRate": 1, "egressBurst": 8}}},
	}
	ctr := nstest.New(t, "ctr")
	for i, c := range cases {
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("fail%d", i), NetNS: ctr.Path(), IfName: "eth0", CapabilityArgs: c.caps}
		if _, err := cw.add(list, rt); err == nil {
			t.Errorf("%s: ADD succeeded, want an error", c.what)
			_ = cw.del(list, rt)
			continue
		} else {
			t.Logf("%s: %v", c.what, err)
		}
		if left, _ := filepath.Glob(filepath.Join(dataDir, "lab", "10.*")); len(left) != 0 {
			t.Errorf("%s: IPAM allocations left: %v", c.what, left)
		}
		for _, g := range []string{"ports/lab/*.json", "attachments.d/*"} {
			if left, _ := filepath.Glob(filepath.Join(cw.runDir, g)); len(left) != 0 {
				t.Errorf("%s: records left: %v", c.what, left)
			}
		}
		if out, err := ctr.Try("ip", "link", "show", "eth0"); err == nil {
			t.Errorf("%s: eth0 left in the container: %s", c.what, out)
		}
		if d := nstest.Diff(before, dump()); d != "" {
			t.Errorf("%s: dom0 after the failed ADD differs (- before, + after):\n%s", c.what, d)
		}
	}
}

// TestCNIParallel runs 50 ADDs at once, as runtimes do, then 50 DELs at once:
// distinct addresses, every container attached with its antispoof rules, and
// nothing left afterwards.
func TestCNIParallel(t *testing.T) {
	t.Parallel()
	const n = 50
	cw, dump := newLabCNIWorld(t)
	cw.mustRun(0, "start", "net=lab")
	before := dump()
	dataDir := t.TempDir()
	list, _ := cniConflist(t, dataDir)

	ctrs := make([]*nstest.NS, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range ctrs {
		ctrs[i] = nstest.New(t, "ctr")
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("par%d-%s", i, ctrs[i].Name()), NetNS: ctrs[i].Path(), IfName: "eth0"}
	}
	addrs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			res, err := cw.add(list, rts[i])
			if err == nil && len(res.IPs) != 1 {
				err = fmt.Errorf("IPs %v", res.IPs)
			}
			if err == nil {
				addrs[i] = res.IPs[0].Address.IP.String()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	t.Logf("%d parallel ADDs: %v", n, time.Since(start))
	seen := map[string]int{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
			continue
		}
		if j, dup := seen[addrs[i]]; dup {
			t.Errorf("containers %d and %d both got %s", j, i, addrs[i])
		}
		seen[addrs[i]] = i
	}
	ruleset := cw.dom0.Exec(t, "nft", "list", "ruleset")
	onBridge := cw.dom0.Exec(t, "ip", "-o", "link", "show", "master", "brlab")
	for i, rt := range rts {
		if errs[i] != nil {
			continue
		}
		hv := cniHostVeth(rt.ContainerID, "eth0")
		if !strings.Contains(onBridge, " "+hv+"@") {
			t.Errorf("container %d: %s not on brlab", i, hv)
		}
		if !strings.Contains(ruleset, `"`+hv+`" . `+addrs[i]) {
			t.Errorf("container %d: no antispoof entry %s . %s", i, hv, addrs[i])
		}
		if _, err := os.Stat(filepath.Join(cw.runDir, "ports", "lab", hv+".json")); err != nil {
			t.Errorf("container %d: port record: %v", i, err)
		}
	}
	for _, i := range []int{0, n / 2, n - 1} {
		mustPing(t, ctrs[i], fmt.Sprintf("ctr%d", i), gatewayIP)
	}

	start = time.Now()
	for i := range n {
		wg.Go(func() { errs[i] = cw.del(list, rts[i]) })
	}
	wg.Wait()
	t.Logf("%d parallel DELs: %v", n, time.Since(start))
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dataDir, "lab", "10.*")); len(left) != 0 {
		t.Errorf("IPAM allocations left after DEL: %v", left)
	}
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after the DELs differs (- before, + after):\n%s", d)
	}
}

// newLabCNIWorld is a CNI world whose host config has the network "lab" on
// brlab, and the dump of dom0 that CNI tests compare (see cniNeutral).
func newLabCNIWorld(t *testing.T) (*cniWorld, func() string) {
	t.Helper()
	cw := newCNIWorld(t)
	cw.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
`)
	return cw, func() string { return cniNeutral(cw.dom0.Dump(t), "brlab") }
}

// cleanAfterDel checks that host-local released every address of dataDir
// (only its bookkeeping files remain) and that dom0 is as it was before.
func cleanAfterDel(t *testing.T, dataDir, before, after string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(dataDir, "lab", "10.*")); len(left) != 0 {
		t.Errorf("IPAM allocations left after DEL: %v", left)
	}
	if d := nstest.Diff(before, after); d != "" {
		t.Errorf("dom0 after DEL differs (- before, + after):\n%s", d)
	}
}
