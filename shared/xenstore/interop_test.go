package xenstore

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRealTools drives the Server with Xen's own command-line tools, which
// use libxenstore and honour XENSTORED_PATH: the strongest check that the
// double speaks the real protocol. Debian: apt-get install xenstore-utils.
func TestRealTools(t *testing.T) {
	tools := []string{"xenstore-write", "xenstore-read", "xenstore-rm", "xenstore-ls",
		"xenstore-list", "xenstore-exists", "xenstore-chmod", "xenstore-watch"}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package xenstore-utils); skipping interop with the real tools", tool)
		}
	}
	s := startServer(t)
	c := dial(t, s)
	run := func(ctx context.Context, args ...string) (string, error) {
		path, _ := exec.LookPath(args[0])
		cmd := exec.CommandContext(ctx, path, args[1:]...)
		cmd.Env = []string{"XENSTORED_PATH=" + s.Path()} // like libxl's scrubbed environment
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(want string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := run(ctx, args...)
		if err != nil || out != want {
			t.Fatalf("%s: %q, %v; want %q", strings.Join(args, " "), out, err, want)
		}
	}
	fails := func(args ...string) {
		t.Helper()
		if out, err := run(context.Background(), args...); err == nil {
			t.Fatalf("%s succeeded: %q", strings.Join(args, " "), out)
		}
	}

	// The tools wrap every command in a transaction (start, ops, end "T").
	must("", "xenstore-write", "backend/vif/1/0/mac", "00:16:3e:00:00:01",
		"/local/domain/0/backend/vif/1/0/bridge", "xenbr0", "backend/vif/1/0/ip", "192.0.2.10 2001:db8::10")
	if v, err := c.Read("/local/domain/0/backend/vif/1/0/mac"); err != nil || v != "00:16:3e:00:00:01" {
		t.Fatalf("Go client reads %q, %v", v, err)
	}
	if err := c.Write("backend/vif/1/0/hotplug-status", "connected"); err != nil {
		t.Fatal(err)
	}
	must("connected\nxenbr0\n", "xenstore-read", "backend/vif/1/0/hotplug-status", "/local/domain/0/backend/vif/1/0/bridge")
	fails("xenstore-read", "backend/vif/1/0/vifname") // ENOENT: tool aborts its transaction ("F") and exits 1
	must("", "xenstore-exists", "backend/vif/1/0/ip")
	fails("xenstore-exists", "backend/vif/1/0/vifname")
	must("mac\nbridge\nip\nhotplug-status\n", "xenstore-list", "backend/vif/1/0")
	must("", "xenstore-chmod", "backend/vif/1/0/mac", "n0", "r1")
	must(`/local/domain/0/backend/vif/1/0/mac = "00:16:3e:00:00:01"   (n0,r1)
/local/domain/0/backend/vif/1/0/bridge = "xenbr0"   (n0)
/local/domain/0/backend/vif/1/0/ip = "192.0.2.10 2001:db8::10"   (n0)
/local/domain/0/backend/vif/1/0/hotplug-status = "connected"   (n0)
`, "xenstore-ls", "-f", "-p", "/local/domain/0/backend/vif/1/0")

	must("", "xenstore-rm", "backend/vif/1/0/ip")
	must("", "xenstore-rm", "backend/vif/1/0/ip") // already gone, parent exists: fine
	fails("xenstore-rm", "backend/vif/9/9/ip")    // parent missing: ENOENT
	if ok, _ := c.Exists("backend/vif/1/0/ip"); ok {
		t.Fatal("ip still there")
	}

	// Watches: the initial event, then one per change at or under the path.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watched := make(chan string, 1)
	go func() {
		out, err := run(ctx, "xenstore-watch", "-n", "3", "backend/vif/1/0/hotplug-status")
		watched <- fmt.Sprint(out, err)
	}()
	waitWatch(t, s, 1)
	c.Write("backend/vif/1/0/other", "not watched")
	c.Write("backend/vif/1/0/hotplug-status", "")
	c.Rm("backend/vif/1")
	if got, want := <-watched, "backend/vif/1/0/hotplug-status\n"+
		"backend/vif/1/0/hotplug-status\nbackend/vif/1/0/hotplug-status\n<nil>"; got != want {
		t.Fatalf("xenstore-watch printed %q, want %q", got, want)
	}

	// Parallel writers creating siblings conflict on the parent; the tools
	// retry on EAGAIN, and every write must land exactly once.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if out, err := run(ctx, "xenstore-write", fmt.Sprintf("backend/vif/%d/0/hotplug-status", i), "connected"); err != nil {
				t.Errorf("parallel xenstore-write %d: %q, %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	got, err := c.List("backend/vif")
	if err != nil || len(got) != 20 {
		t.Fatalf("after parallel writes: %q, %v", got, err)
	}

	// rm -t tidies empty parents (it reads and lists each one).
	must("", "xenstore-rm", "-t", "backend/vif/3/0/hotplug-status")
	if ok, _ := c.Exists("backend/vif/3"); ok {
		t.Error("rm -t left backend/vif/3")
	}
	if names, _ := c.List("backend/vif"); len(names) != 19 {
		t.Errorf("rm -t removed too much: %q", names)
	}
	if v := s.Dump()["/local/domain/0/backend/vif/5/0/hotplug-status"]; v != "connected" {
		t.Errorf("backend/vif/5/0/hotplug-status = %q", v)
	}
}

// waitWatch waits until the server has n watches registered.
func waitWatch(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		got := len(s.watches)
		s.mu.Unlock()
		if got >= n {
			return
		}
	}
	t.Fatalf("no watch registered")
}
