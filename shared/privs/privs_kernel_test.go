package privs

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
)

// childEnv makes the test binary, run as a setuid-root copy, act as a
// privileged program: Drop, then report what it has.
const childEnv = "BROUTER_PRIVS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func child() int {
	c, err := Real()
	if err == nil {
		ResetInherited()
		err = Drop([]uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW, unix.CAP_KILL}, []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW})
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("caller", c.UID, c.Groups)
	fmt.Println("env", os.Environ())
	fmt.Println("umask", unix.Umask(0o022))
	bits, _ := unix.PrctlRetInt(unix.PR_GET_SECUREBITS, 0, 0, 0, 0)
	fmt.Println("securebits", bits)
	// Every thread, then a program it runs.
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		fmt.Println("thread", statusLines(string(b)))
	}
	out, err := exec.Command("cat", "/proc/self/status").Output()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("exec", statusLines(string(out)))
	return 0
}

// statusLines keeps the ids and capability lines of /proc/PID/status.
func statusLines(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs":
			keep = append(keep, k+"="+strings.Join(strings.Fields(v), ","))
		}
	}
	return strings.Join(keep, " ")
}

// Drop, in a setuid-root program run by uid 65534 with a group of its own:
// euid/egid 0, the caller's real ids and groups reported, the environment
// and umask reset, only the kept capabilities on every thread, none to
// regain, and only the inherited ones in a program it runs.
func TestDropSetuidRoot(t *testing.T) {
	nstest.RequireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "brouter-privs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "privs.test")
	copyFile(t, self, bin)
	if err := os.Chmod(bin, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Flags&unix.ST_NOSUID != 0 {
		t.Skipf("%s is on a nosuid file system: no setuid program can run there", dir)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--groups=4242", bin)
	cmd.Env = []string{childEnv + "=1", "PATH=/usr/bin:/bin", "BROUTER_CONFIG=/tmp/evil.toml"}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		ls, _ := exec.Command("ls", "-la", dir).CombinedOutput()
		st, _ := os.ReadFile("/proc/self/status")
		t.Fatalf("child: %v\n%s\n%s\n%s", err, out, ls, statusLines(string(st)))
	}
	got := string(out)
	t.Logf("child:\n%s", got)
	const (
		caps    = "0000000000003020" // NET_ADMIN (12), NET_RAW (13), KILL (5)
		inherit = "0000000000003000"
	)
	want := []string{
		"caller 65534 [65534 4242]",
		"env [PATH=/usr/sbin:/usr/bin:/sbin:/bin]",
		"umask 18", // 022
		"securebits 47",
		"Uid=65534,0,0,0 Gid=65534,0,0,0 Groups= CapInh=" + inherit + " CapPrm=" + caps + " CapEff=" + caps + " CapBnd=" + caps + " CapAmb=" + inherit + " NoNewPrivs=1",
		"exec Uid=65534,0,0,0 Gid=65534,0,0,0 Groups= CapInh=" + inherit + " CapPrm=" + inherit + " CapEff=" + inherit + " CapBnd=" + caps + " CapAmb=" + inherit + " NoNewPrivs=1",
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("child output lacks %q", w)
		}
	}
	if n := strings.Count(got, "thread "); n < 2 {
		t.Errorf("child reported %d threads, want the Go runtime's several", n)
	}
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "thread ") && !strings.Contains(l, "CapEff="+caps+" ") {
			t.Errorf("a thread kept other capabilities: %s", l)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
