package nstest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

func TestNamespaceLifecycle(t *testing.T) {
	RequireRoot(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		a := New(t, "a")
		b := New(t, "b")
		name = a.Name()
		if a.Name() == b.Name() {
			t.Fatalf("same name %s", a.Name())
		}
		Veth(t, a, "va", b, "vb")
		a.Exec(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
		b.Exec(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
		if err := a.Ping(t, "192.0.2.2"); err != nil {
			t.Fatalf("ping across veth: %v", err)
		}
		if err := a.PingOnce("198.51.100.7"); err == nil {
			t.Errorf("ping to an unrouted address succeeded")
		}
		if _, err := a.Try("false"); err == nil {
			t.Errorf("Try(false) returned no error")
		}
		a.Start(t, "sleep", "60")
		if got := a.Sysctl(t, "net.ipv4.ip_forward"); got != "0" {
			t.Errorf("ip_forward in a fresh namespace = %q", got)
		}
		// Do runs inside the namespace and comes back.
		root, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		var inside bool
		if err := a.Do(func() error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			inside = !cur.Equal(root)
			_, err = os.Stat("/proc/sys/net/ipv4/ip_forward")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !inside {
			t.Errorf("Do: fn did not run in another namespace")
		}
	})
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
		t.Errorf("namespace %s still exists after its test ended", name)
	}
}

// A failing test must still delete its namespaces.
func TestCleanupOnFailure(t *testing.T) {
	RequireRoot(t)
	if os.Getenv("NSTEST_FAIL_CHILD") == "1" {
		n := New(t, "failing")
		os.WriteFile(os.Getenv("NSTEST_NAME_FILE"), []byte(n.Name()), 0o644)
		n.Exec(t, "false") // t.Fatal
		return
	}
	nameFile := t.TempDir() + "/name"
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupOnFailure$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NSTEST_FAIL_CHILD=1", "NSTEST_NAME_FILE="+nameFile)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child test passed, want a failure:\n%s", out)
	}
	name, rerr := os.ReadFile(nameFile)
	if rerr != nil || len(name) == 0 {
		t.Fatalf("child did not record its namespace (%v):\n%s", rerr, out)
	}
	if list, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(list), string(name)) {
		exec.Command("ip", "netns", "del", string(name)).Run()
		t.Errorf("namespace %s survived its failing test", name)
	}
}

func TestDumpStableAndSensitive(t *testing.T) {
	RequireRoot(t)
	n := New(t, "dump")
	peer := New(t, "peer")
	Veth(t, n, "v0", peer, "v1")
	first := n.Dump(t)
	if d := Diff(first, n.Dump(t)); d != "" {
		t.Fatalf("two dumps of an idle namespace differ:\n%s", d)
	}
	for _, want := range []string{"== links ==", "link v0 kind=veth", "== routes ==", "== nft ==", "== iptables =="} {
		if !strings.Contains(first, want) {
			t.Errorf("dump lacks %q:\n%s", want, first)
		}
	}
	n.Exec(t, "ip", "link", "add", "br9", "type", "bridge")
	n.Exec(t, "ip", "link", "set", "v0", "master", "br9")
	n.Exec(t, "ip", "link", "set", "br9", "up")
	n.Exec(t, "ip", "addr", "add", "10.9.9.1/24", "dev", "br9")
	n.Exec(t, "nft", "add", "table", "inet", "t")
	n.Exec(t, "iptables", "-N", "X")
	after := n.Dump(t)
	d := Diff(first, after)
	for _, want := range []string{"+ link br9 kind=bridge", "master=br9", "+ addr br9 inet 10.9.9.1/24", "+ route-4 10.9.9.0/24 dev br9", "+ table inet t", "+ :X -\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
}
