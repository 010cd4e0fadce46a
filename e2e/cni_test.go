package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	env    []string
}

func newCNIWorld(t *testing.T) *cniWorld {
	t.Helper()
	w := newWorld(t, worldOpts{})
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
	s := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "lab",
  "plugins": [{
    "type": "brouter",
    "network": "lab",
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "10.98.98.0/24", "rangeStart": "10.98.98.100", "rangeEnd": "10.98.98.150", "gateway": "10.98.98.1"}]],
      "dataDir": %q
    }
  }]
}`, dataDir)
	list, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return list, s
}

func TestCNIAddCheckDel(t *testing.T) {
	t.Parallel()
	cw := newCNIWorld(t)
	cw.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
`)
	dump := func() string { return cniNeutral(cw.dom0.Dump(t), "brlab") }
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
	if left, _ := filepath.Glob(filepath.Join(dataDir, "lab", "10.*")); len(left) != 0 {
		t.Errorf("IPAM allocations left after DEL: %v", left)
	}
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after DEL differs (- before, + after):\n%s", d)
	}
}

func TestCNIBadInput(t *testing.T) {
	t.Parallel()
	cw := newCNIWorld(t)
	cw.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
`)
	dump := func() string { return cniNeutral(cw.dom0.Dump(t), "brlab") }
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
