// Command qemu-guest prints, one argument per line, the QEMU command line of
// the test guest e2e/qemu builds (a Debian cloud kernel and a busybox
// initramfs assembled from Debian packages at run time, cached outside the
// repository), for the demo to boot:
//
//	qemu-guest -tap TAP -ifup SCRIPT -ifdown SCRIPT -mac MAC [-append WORDS]
//	qemu-guest -bridge BRIDGE -helper HELPER -mac MAC [-append WORDS]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/brouter/brouter/e2e/qemu"
)

func main() {
	var o qemu.Options
	var appendWords string
	flag.StringVar(&o.Tap, "tap", "tap0", "the tap's name")
	flag.StringVar(&o.IfUp, "ifup", "", "QEMU's script=")
	flag.StringVar(&o.IfDown, "ifdown", "", "QEMU's downscript=")
	flag.StringVar(&o.MAC, "mac", "", "the guest NIC's MAC")
	flag.StringVar(&o.Bridge, "bridge", "", "-netdev bridge,br=BRIDGE instead of a tap")
	flag.StringVar(&o.Helper, "helper", "", "the bridge helper QEMU runs for -bridge")
	flag.StringVar(&appendWords, "append", "", "words for the guest's kernel command line (brtest.ping=A,B brtest.resolve=NAME)")
	flag.Parse()
	if err := qemu.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "qemu-guest:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := qemu.Build(ctx, qemu.DefaultCacheDir())
	if err != nil {
		fmt.Fprintln(os.Stderr, "qemu-guest:", err)
		os.Exit(1)
	}
	o.Kernel, o.Initrd, o.Append = g.Kernel, g.Initrd, strings.Fields(appendWords)
	for _, a := range qemu.Args(o) {
		fmt.Println(a)
	}
}
