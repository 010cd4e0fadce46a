package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// binDir holds the binaries built for this run of the package.
var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Every test skips through nstest.RequireRoot; nothing to build.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "brouter-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type build struct {
	once sync.Once
	path string
	err  error
}

var builds sync.Map // program name -> *build

// binary builds ./hooks/NAME (or ./plugins/NAME) once per test run and returns
// its path. Each program is built on its own, so one that does not compile
// fails only its own tests.
func binary(t testing.TB, name string) string {
	t.Helper()
	nstest.RequireRoot(t)
	v, _ := builds.LoadOrStore(name, &build{})
	b := v.(*build)
	b.once.Do(func() { b.path, b.err = goBuild(name) })
	if b.err != nil {
		t.Fatalf("e2e: %v", b.err)
	}
	return b.path
}

func goBuild(name string) (string, error) {
	out := filepath.Join(binDir, name)
	return out, goBuildTo(name, out)
}

// goBuildTo builds ./hooks/NAME (or ./plugins/NAME) into out, as `make build`
// does (CGO_ENABLED=0), with extra go build flags.
func goBuildTo(name, out string, flags ...string) error {
	root, err := filepath.Abs("..") // go test runs in the package directory, e2e/
	if err != nil {
		return err
	}
	pkg := ""
	for _, dir := range []string{"hooks", "plugins"} {
		if st, err := os.Stat(filepath.Join(root, dir, name)); err == nil && st.IsDir() {
			pkg = "./" + dir + "/" + name
			break
		}
	}
	if pkg == "" {
		return fmt.Errorf("no program %s under hooks/ or plugins/ in %s", name, root)
	}
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command(goTool, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimSpace(string(msg)))
	}
	return nil
}
