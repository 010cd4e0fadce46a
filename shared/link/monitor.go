package link

import (
	"context"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Deleted reports the names of links deleted in the current network
// namespace until ctx ends (a QEMU guest's tap when QEMU exits, a Xen vif
// when its domain is destroyed, a container's veth when its namespace goes,
// a bridge deleted behind brouter's back). The channel is closed when ctx
// ends or the subscription fails (e.g. the kernel dropped notifications);
// subscribe again then, and look at what exists.
func Deleted(ctx context.Context) (<-chan string, error) {
	updates := make(chan netlink.LinkUpdate, 256)
	failed := make(chan struct{})
	var once sync.Once
	err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), netlink.LinkSubscribeOptions{
		ErrorCallback:     func(error) { once.Do(func() { close(failed) }) },
		ReceiveBufferSize: 1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("link: subscribe to link events: %w", err)
	}
	out := make(chan string, 256)
	go func() {
		defer close(out)
		for {
			select {
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Header.Type != unix.RTM_DELLINK || u.Link == nil {
					continue
				}
				select {
				case out <- u.Link.Attrs().Name:
				case <-ctx.Done():
					return
				}
			case <-failed:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
