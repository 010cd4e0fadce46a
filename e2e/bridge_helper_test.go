package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/e2e/qemu"
	"github.com/brouter/brouter/shared/nstest"
	"github.com/brouter/brouter/shared/shape"
)

// Unprivileged users on the bridge helper's scenario: nobody (65534) is
// allowed by name, uid 65532 through its group 4242, uid 65533 not at all.
const (
	helperGuestMAC = "52:54:00:98:00:30" // nobody's guest, by the port rule of its taps
	helperGuestIP  = "10.98.98.30"
	helperKillMAC  = "52:54:00:98:00:31" // 65532's guest, killed
	helperGroup    = "4242"
)

// asUser is the prefix that starts QEMU as uid (and gid) id with the given
// supplementary groups (none: cleared).
func asUser(id int, groups ...string) []string {
	p := []string{"setpriv", fmt.Sprintf("--reuid=%d", id), fmt.Sprintf("--regid=%d", id)}
	if len(groups) == 0 {
		return append(p, "--clear-groups")
	}
	return append(p, "--groups="+strings.Join(groups, ","))
}

// setuidHelper builds bridge-helper with config as its host config and
// installs it setuid root in a directory of its own that every user can
// reach, as `make install` does (file capabilities cannot do: see README).
func setuidHelper(t *testing.T, config string) string {
	t.Helper()
	nstest.RequireRoot(t)
	dir, err := os.MkdirTemp("", "brouter-e2e-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Flags&unix.ST_NOSUID != 0 {
		t.Skipf("%s is mounted nosuid: the setuid-root bridge helper cannot run from it (set TMPDIR to a directory on a file system without nosuid)", dir)
	}
	bin := filepath.Join(dir, "bridge-helper")
	if err := goBuildTo("bridge-helper", bin, "-trimpath", "-ldflags", "-X main.hostConfig="+config); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := os.Chmod(bin, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("bridge helper installed setuid root at %s, host config %s", bin, config)
	return bin
}

// helperLabConfig is network lab of the QEMU scenario with run and state
// directories in the config (the helper takes nothing from the environment),
// its allow lists, and rules for the taps of uids 65534 and 65532.
func (w *world) helperLabConfig() string {
	lab := strings.Replace(qemuLabConfig(""), "mode = \"nat\"\n",
		"mode = \"nat\"\nallow_users = [\"nobody\"]\nallow_groups = ["+helperGroup+"]\n", 1)
	return fmt.Sprintf("run_dir = %q\nstate_dir = %q\n", w.runDir, w.stateDir) + lab + fmt.Sprintf(`
[[network.lab.port]]
name = "tap65534.*"
mac = %q
ips = [%q]

[[network.lab.port]]
name = "tap65532.*"
mac = %q
ips = ["10.98.98.31"]

[[network.lab.shaping.port]]
name = "tap65532.*"
from_guest = "10mbit"
`, helperGuestMAC, helperGuestIP, helperKillMAC)
}

// TestBridgeHelper: QEMU started by unprivileged users with -netdev
// bridge,helper=<the setuid-root bridge helper>, in one world:
//   - refused, QEMU does not start, and nothing changes: a user the network
//     does not allow (even with BROUTER_CONFIG and BROUTER_RUN_DIR pointing
//     at a config and directory of its own that would allow it), a bridge
//     that is not a brouter network;
//   - nobody's guest boots: its tap is tap65534.0, the port rule for those
//     taps gives it its static lease behind antispoof, it reaches the gateway
//     and the outside through NAT; after its poweroff the tap is gone, its
//     records are not, and after network-virtual reconcile nothing is left;
//   - uid 65532's QEMU (allowed by its group; its taps shaped, so an ifb
//     outlives them) is killed with SIGKILL once it holds its tap, with
//     network-virtual watch running: the watcher leaves nothing, without
//     any command.
func TestBridgeHelper(t *testing.T) {
	kernel, initrd := qemuGuest(t)
	w := newWorld(t, worldOpts{outside: true})
	w.writeConfig(w.helperLabConfig())
	w.openForDnsmasq()
	helper := setuidHelper(t, w.config)
	w.mustRun(0, "start", "net=lab")
	w.dom0.Exec(t, "ip", "link", "add", "brother", "type", "bridge")
	before := w.qemuDump()
	boot := func(user []string, bridge, mac string, env []string, appendArgs ...string) *qemu.Result {
		t.Helper()
		res, err := qemu.Boot(context.Background(), qemu.Options{
			NS: w.dom0, Kernel: kernel, Initrd: initrd, Bridge: bridge, Helper: helper, MAC: mac,
			Prefix: user, Env: env, Append: appendArgs, Timeout: qemuBootLimit,
		})
		if err != nil {
			t.Fatalf("QEMU: %v\n%s", err, res.Console)
		}
		t.Logf("QEMU exited %d after %s; reports: %q", res.ExitCode, res.Elapsed.Round(100*time.Millisecond), res.Lines)
		return res
	}

	t.Run("refused", func(t *testing.T) {
		// The user's own config would allow it, in a run directory of its own.
		own := t.TempDir()
		if err := os.Chmod(own, 0o755); err != nil {
			t.Fatal(err)
		}
		evil := filepath.Join(own, "brouter.toml")
		doc := fmt.Sprintf("run_dir = %q\nstate_dir = %q\n[network.lab]\nbridge = \"brlab\"\naddress = %q\nallow_users = [65533]\n", own, own, gatewayCIDR)
		if err := os.WriteFile(evil, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(own, 65533, 65533); err != nil {
			t.Fatal(err)
		}
		env := []string{"BROUTER_CONFIG=" + evil, "BROUTER_RUN_DIR=" + own, "BROUTER_STATE_DIR=" + own}
		for _, c := range []struct {
			name   string
			user   []string
			bridge string
			want   []string
		}{
			{"user not allowed", asUser(65533), "brlab", []string{
				"bridge-helper: brlab: vnet: user uid 65533 may not attach guests to network lab",
				"add 65533 to allow_users", "[network.lab] of " + w.config}},
			{"not a brouter network", asUser(65534), "brother", []string{
				"bridge-helper: brother: vnet: bridge brother is not a brouter network: no [network.NAME] in " + w.config}},
		} {
			res := boot(c.user, c.bridge, qemuGuestMAC, env)
			var lines []string
			for _, l := range strings.Split(res.Console, "\n") {
				if strings.HasPrefix(l, "bridge-helper: ") {
					lines = append(lines, l)
				}
			}
			if res.ExitCode == 0 || res.Done || len(res.Lines) > 0 {
				t.Errorf("%s: QEMU started the guest (exit %d):\n%s", c.name, res.ExitCode, res.Console)
			}
			if len(lines) != 1 {
				t.Errorf("%s: want one line from the helper, got %q in:\n%s", c.name, lines, res.Console)
				continue
			}
			for _, want := range c.want {
				if !strings.Contains(lines[0], want) {
					t.Errorf("%s: the helper's error %q does not say %q", c.name, lines[0], want)
				}
			}
		}
		if ents, _ := os.ReadDir(own); len(ents) != 1 {
			t.Errorf("the user's own run directory got files: %v", ents)
		}
		if d := nstest.Diff(before, w.qemuDump()); d != "" {
			t.Errorf("refused calls changed dom0 (- before, + after):\n%s", d)
		}
		if recs := w.portRecords("tap6553"); len(recs) > 0 {
			t.Errorf("refused calls left records: %v", recs)
		}
	})

	t.Run("poweroff", func(t *testing.T) {
		uplinkBefore := w.observed("from_uplink")
		res := boot(asUser(65534), "brlab", helperGuestMAC, nil,
			"brtest.ping="+gatewayIP+","+outsideIP,
			"brtest.resolve="+qemuHostName+"."+qemuDomain+","+qemuHostName)
		if res.ExitCode != 0 || !res.Done {
			t.Fatalf("guest run failed (exit %d):\n%s", res.ExitCode, res.Console)
		}
		// The static lease comes from the rule for tap65534.*: the tap was
		// named after nobody's uid.
		if checkGuest(t, res, helperGuestIP) && w.observed("from_uplink") == uplinkBefore {
			t.Errorf("the outside saw no echo request from %s (masqueraded guest)", uplinkDom0)
		}
		w.leftUntilReconcile(t, "tap65534.0")
		r := w.mustRun(0, "reconcile", "net=lab")
		if !strings.Contains(r.stdout, "port tap65534.0: its device is gone; detached") {
			t.Errorf("reconcile did not detach tap65534.0:\n%s", r)
		}
		w.nothingLeft(t, before, "tap65534.0", helperGuestMAC)
	})

	t.Run("sigkill", func(t *testing.T) {
		logs := w.startWatch(t)
		o := qemu.Options{NS: w.dom0, Kernel: kernel, Initrd: initrd, Bridge: "brlab", Helper: helper, MAC: helperKillMAC}
		cmd := w.dom0.Cmd(append(asUser(65532, "65532", helperGroup), qemu.Args(o)...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		held := false
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			onBridge, err := w.dom0.Try("ip", "-o", "link", "show", "master", "brlab")
			if err == nil && strings.Contains(onBridge, "tap65532.0") && !strings.Contains(w.dom0Procs(), ":bridge-helper") {
				held = true
				break
			}
		}
		// Control: what outlives the tap is there (the ifb of its shaping).
		ifb := shape.PortIfb("tap65532.0")
		_, ifbErr := w.dom0.Try("ip", "link", "show", ifb)
		_ = cmd.Process.Kill() // SIGKILL: QEMU runs nothing on its way out
		_ = cmd.Wait()
		if !held {
			t.Fatalf("tap65532.0 never joined brlab with the helper done; QEMU said:\n%s", out.String())
		}
		if ifbErr != nil {
			t.Errorf("control: no ifb %s for tap65532.0's shaping", ifb)
		}
		if _, err := w.dom0.Try("ip", "link", "show", "tap65532.0"); err == nil {
			t.Errorf("tap65532.0 outlived its QEMU")
		}
		took, why := waitFor(healDeadline, func() (bool, string) {
			if recs := w.portRecords("tap65532.0"); len(recs) > 0 {
				return false, fmt.Sprintf("records left: %v", recs)
			}
			return true, ""
		})
		if why != "" {
			t.Fatalf("the watcher did not detach the killed QEMU's tap within %s: %s\nwatch log:\n%s", healDeadline, why, logs)
		}
		t.Logf("the watcher detached tap65532.0 in %s", took.Round(10*time.Millisecond))
		w.nothingLeft(t, before, "tap65532.0", helperKillMAC)
	})

	w.dom0.Exec(t, "ip", "link", "del", "brother")
	w.mustRun(0, "stop", "net=lab")
}

// leftUntilReconcile checks that a helper's tap, gone with its QEMU, left
// its record: the watcher or reconcile has something to do.
func (w *world) leftUntilReconcile(t *testing.T, tap string) {
	t.Helper()
	if _, err := w.dom0.Try("ip", "link", "show", tap); err == nil {
		t.Errorf("%s outlived its QEMU", tap)
	}
	if recs := w.portRecords(tap); len(recs) == 0 {
		t.Errorf("no record of %s after its QEMU exited; reconcile has nothing to do", tap)
	}
}

// nothingLeft checks dom0 once a helper's tap was detached: as before, no
// record, no file naming the guest's MAC, and reconcile finds nothing.
func (w *world) nothingLeft(t *testing.T, before, tap, mac string) {
	t.Helper()
	w.bridgeSettled("brlab")
	if d := nstest.Diff(before, w.qemuDump()); d != "" {
		t.Errorf("dom0 after %s's QEMU went differs from before (- before, + after):\n%s", tap, d)
	}
	if recs := w.portRecords(tap); len(recs) > 0 {
		t.Errorf("records of %s left: %v", tap, recs)
	}
	if files := w.runFilesMentioning(mac); len(files) > 0 {
		t.Errorf("files under the run directory still name %s: %v", mac, files)
	}
	if r := w.mustRun(0, "reconcile", "net=lab"); !strings.Contains(r.stdout, "nothing to repair") {
		t.Errorf("reconcile after %s was detached: want nothing to repair, got:\n%s", tap, r)
	}
}
