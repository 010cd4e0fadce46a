package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

func TestArgs(t *testing.T) {
	a := strings.Join(Args(Options{Kernel: "K", Initrd: "I", Tap: "tap0", IfUp: "/up", MAC: "52:54:00:00:00:01", Append: []string{"brtest.ping=10.0.0.1"}}), " ")
	for _, want := range []string{
		"-netdev tap,id=n0,ifname=tap0,script=/up,downscript=no",
		"-device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:00:01",
		"console=ttyS0", "brtest.ping=10.0.0.1", "-no-reboot", "accel=tcg",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("QEMU args lack %q:\n%s", want, a)
		}
	}
}

func TestArgsBridge(t *testing.T) {
	a := strings.Join(Args(Options{Kernel: "K", Initrd: "I", Bridge: "brlab", Helper: "/h/bridge-helper"}), " ")
	if want := "-netdev bridge,id=n0,br=brlab,helper=/h/bridge-helper -device"; !strings.Contains(a, want) {
		t.Errorf("QEMU args lack %q:\n%s", want, a)
	}
}

// At the timeout QEMU gets SIGTERM, so it still runs its downscript.
func TestBootTimeoutRunsDownscript(t *testing.T) {
	nstest.RequireRoot(t)
	if err := Available(); err != nil {
		t.Skip(err)
	}
	g, err := Build(context.Background(), DefaultCacheDir())
	if err != nil {
		t.Skipf("no guest: %v", err)
	}
	ns := nstest.New(t, "qemu")
	dir := t.TempDir()
	up, down, mark := filepath.Join(dir, "up"), filepath.Join(dir, "down"), filepath.Join(dir, "down-ran")
	if err := os.WriteFile(up, []byte("#!/bin/sh\nip link set \"$1\" up\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(down, []byte("#!/bin/sh\necho \"$1\" >"+mark+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := Boot(context.Background(), Options{NS: ns, Kernel: g.Kernel, Initrd: g.Initrd,
		Tap: "tapt0", IfUp: up, IfDown: down, Timeout: 2 * time.Second})
	if err == nil || !res.TimedOut {
		t.Fatalf("want a timeout, got err %v, result %+v", err, res)
	}
	if b, err := os.ReadFile(mark); err != nil || strings.TrimSpace(string(b)) != "tapt0" {
		t.Errorf("downscript did not run with the tap's name: %q %v\n%s", b, err, res.Console)
	}
	if out, err := ns.Try("ip", "link", "show", "tapt0"); err == nil {
		t.Errorf("tap left after QEMU stopped:\n%s", out)
	}
}
