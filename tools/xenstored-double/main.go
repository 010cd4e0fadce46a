// Command xenstored-double serves the xenstore wire protocol from memory on a
// Unix socket, for demos and manual tests of vif-brouter without Xen:
//
//	xenstored-double /tmp/xs.sock &
//	XENSTORED_PATH=/tmp/xs.sock xenstore-write backend/vif/5/0/bridge xenbr0
//
// It is shared/xenstore's test server; it stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/brouter/brouter/shared/xenstore"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: xenstored-double SOCKET")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := xenstore.ListenAndServe(ctx, os.Args[1]); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "xenstored-double:", err)
		os.Exit(1)
	}
}
