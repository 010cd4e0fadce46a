package link

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
)

// OpenTap: the kernel numbers the taps of one pattern, a tap has the flags
// asked for, and it goes with its last descriptor.
func TestOpenTap(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "tap")
	var fds []int
	var names []string
	err := ns.Do(func() error {
		for _, vnet := range []bool{true, false} {
			fd, name, err := OpenTap("tap1000.%d", vnet)
			if err != nil {
				return err
			}
			fds, names = append(fds, fd), append(names, name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if names[0] != "tap1000.0" || names[1] != "tap1000.1" {
		t.Errorf("taps named %v, want tap1000.0 and tap1000.1", names)
	}
	for i, name := range names {
		// The kernel's TUNGETIFF does not report IFF_NO_PI; ip does ("pi off").
		want := "tun type tap pi off vnet_hdr off persist off"
		if i == 0 {
			want = "tun type tap pi off vnet_hdr on persist off"
		}
		if out := ns.Exec(t, "ip", "-d", "link", "show", name); !strings.Contains(out, want) {
			t.Errorf("%s is not a %q:\n%s", name, want, out)
		}
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if out := ns.Exec(t, "ip", "-br", "link"); strings.Contains(out, "tap1000") {
		t.Errorf("taps still there after their descriptors were closed:\n%s", out)
	}
	for _, bad := range []string{"tap", "tap%d%d", "tap%s", "tap1234567890.%d"} {
		if fd, _, err := OpenTap(bad, false); err == nil {
			unix.Close(fd)
			t.Errorf("OpenTap(%q) succeeded", bad)
		}
	}
}
