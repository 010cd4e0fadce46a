package cli

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestOneLine(t *testing.T) {
	err := fmt.Errorf("vnet: attach tap0: %w", errors.New("nft: Error: syntax\n  add rule x\n  ^^^\n"))
	if got, want := OneLine(err), "vnet: attach tap0: nft: Error: syntax add rule x ^^^"; got != want {
		t.Errorf("OneLine = %q, want %q", got, want)
	}
	if OneLine(nil) != "" {
		t.Error("OneLine(nil) is not empty")
	}
}

func TestWantsHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"online", "type_if=vif"}, false},
		{[]string{"--help"}, true},
		{[]string{"online", "-h"}, true},
		{[]string{"-help"}, false},
		{[]string{"help=1"}, false},
	} {
		if got := WantsHelp(c.args); got != c.want {
			t.Errorf("WantsHelp(%q) = %v", c.args, got)
		}
	}
}

func TestProgram(t *testing.T) {
	p := Program{Name: "qemu-ifup", Usage: "usage: qemu-ifup TAPNAME [BRIDGE]\n"}
	var b bytes.Buffer
	if p.Help(&b) != ExitOK || b.String() != p.Usage {
		t.Errorf("Help: %q", b.String())
	}
	b.Reset()
	if p.Fail(&b, ExitFail, errors.New("tap0:\nno such device")) != ExitFail || b.String() != "qemu-ifup: tap0: no such device\n" {
		t.Errorf("Fail: %q", b.String())
	}
	b.Reset()
	if p.UsageError(&b, errors.New("want TAPNAME")) != ExitUsage || b.String() != "qemu-ifup: want TAPNAME (see qemu-ifup --help)\n" {
		t.Errorf("UsageError: %q", b.String())
	}
}
