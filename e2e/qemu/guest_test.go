package qemu

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The cpio writer's output is what a real cpio reads back.
func TestCPIORoundTrip(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	args := []string{"-idm", "--quiet"}
	if err != nil {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			t.Skip("neither cpio nor busybox installed")
		}
		cpio, args = bb, []string{"cpio", "-idm"}
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("bin")
	c.File("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n"))
	c.File("odd", 0o644, []byte("12345"))
	c.Symlink("bin/sh", "hello")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, args...)
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin/hello")); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("bin/hello = %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "bin/hello")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("bin/hello mode: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "odd")); err != nil || string(b) != "12345" {
		t.Errorf("odd = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "hello" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
}

func TestModName(t *testing.T) {
	for in, want := range map[string]string{
		"a/virtio_net.ko": "virtio_net", "x/virtio-pci.ko.xz": "virtio_pci", "y/failover.ko.zst": "failover", "z/readme": "",
	} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The guest's scripts are valid sh.
func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for name, s := range map[string]string{"init": initScript, "udhcpc.script": udhcpcScript} {
		cmd := exec.Command(sh, "-n")
		cmd.Stdin = strings.NewReader(s)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v: %s", name, err, out)
		}
	}
}
