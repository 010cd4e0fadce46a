package shape

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The classifier programs are a handful of eBPF instructions assembled here,
// so that the package needs no compiler, object file or loader library.
//
// Why a classifier at all: HTB picks a packet's class from skb->priority
// before it looks at any filter, and passes a packet whose skb->priority
// equals the qdisc's own handle unshaped (HTB_DIRECT). Guests cannot set it
// (a veth pair zeroes it, tap and Xen netback build fresh skbs), but dom0 can
// and does: ip_forward derives it from the TOS byte, host sockets set
// SO_PRIORITY, VLAN devices map 802.1p into it, an admin's nftables rule may
// say "meta priority set 1:0" (measured: a 10 Mbit/s port then passed 12
// Gbit/s), and our own from-guest classifier leaves the sender's class in it
// when two guests talk across the bridge. So every shaped hook first pins
// skb->priority to the class the port was given, which is also how a port
// picks its class in a network's shared HTB tree. That is what act_skbedit
// ("skbedit priority") does, but act_skbedit is missing from some kernels
// (this project's CI kernel among them) while cls_bpf is there wherever eBPF
// is; a direct-action program returning TC_ACT_UNSPEC lets the next filter
// (the mirred redirect to an ifb) run as usual.

const (
	bpfProgLoad      = 5 // BPF_PROG_LOAD
	bpfProgTypeSched = 3 // BPF_PROG_TYPE_SCHED_CLS

	offSkbPriority = 32 // offsetof(struct __sk_buff, priority)
	tcActUnspec    = -1 // TC_ACT_UNSPEC: continue with the next filter
)

// insn encodes one struct bpf_insn.
func insn(code uint8, dst, src uint8, off int16, imm int32) []byte {
	b := make([]byte, 8)
	b[0] = code
	if nativeLittle() {
		b[1] = dst&0x0f | src<<4
	} else {
		b[1] = dst<<4 | src&0x0f
	}
	binary.NativeEndian.PutUint16(b[2:], uint16(off))
	binary.NativeEndian.PutUint32(b[4:], uint32(imm))
	return b
}

func nativeLittle() bool {
	var x uint16 = 1
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Opcodes used below.
const (
	opMov32Imm = 0x04 | 0xb0 // BPF_ALU | BPF_MOV | BPF_K
	opMov64Imm = 0x07 | 0xb0 // BPF_ALU64 | BPF_MOV | BPF_K
	opStxMemW  = 0x03 | 0x60 // BPF_STX | BPF_MEM | BPF_W
	opExit     = 0x05 | 0x90 // BPF_JMP | BPF_EXIT
)

// setPriorityProg is, in C:
//
//	int cls(struct __sk_buff *skb) { skb->priority = classid; return TC_ACT_UNSPEC; }
func setPriorityProg(classid uint32) []byte {
	var p []byte
	p = append(p, insn(opMov32Imm, 2, 0, 0, int32(classid))...)
	p = append(p, insn(opStxMemW, 1, 2, offSkbPriority, 0)...)
	p = append(p, insn(opMov64Imm, 0, 0, 0, tcActUnspec)...)
	p = append(p, insn(opExit, 0, 0, 0, 0)...)
	return p
}

// noopProg returns TC_ACT_UNSPEC and does nothing: the program of the tag
// filters that record which port owns which class of a network's ifb.
func noopProg() []byte {
	var p []byte
	p = append(p, insn(opMov64Imm, 0, 0, 0, tcActUnspec)...)
	p = append(p, insn(opExit, 0, 0, 0, 0)...)
	return p
}

// progLoadAttr is the BPF_PROG_LOAD part of union bpf_attr.
type progLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       unsafe.Pointer
	license     unsafe.Pointer
	logLevel    uint32
	logSize     uint32
	logBuf      unsafe.Pointer
	kernVersion uint32
	progFlags   uint32
	progName    [16]byte
}

// loadProg loads a SCHED_CLS program and returns its file descriptor; the
// caller closes it once a filter holds the program.
func loadProg(name string, code []byte) (int, error) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		return -1, fmt.Errorf("shape: loading the eBPF classifier needs a 64-bit platform")
	}
	license := []byte("GPL\x00")
	attr := progLoadAttr{
		progType: bpfProgTypeSched,
		insnCnt:  uint32(len(code) / 8),
		insns:    unsafe.Pointer(&code[0]),
		license:  unsafe.Pointer(&license[0]),
	}
	copy(attr.progName[:15], name)
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	if errno != 0 {
		// Ask again with the verifier's log, to say why.
		log := make([]byte, 4096)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), unsafe.Pointer(&log[0])
		fd2, _, errno2 := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(log)
		if errno2 == 0 {
			return int(fd2), nil
		}
		msg := string(log)
		if i := indexByte0(log); i >= 0 {
			msg = string(log[:i])
		}
		return -1, fmt.Errorf("shape: load eBPF classifier %s (the kernel needs CONFIG_BPF_SYSCALL and cls_bpf): %w%s", name, errno, oneLine(msg))
	}
	return int(fd), nil
}

func indexByte0(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

func oneLine(s string) string {
	out := []byte{}
	for _, c := range []byte(s) {
		if c == '\n' {
			c = ' '
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return ""
	}
	return ": " + string(out)
}
