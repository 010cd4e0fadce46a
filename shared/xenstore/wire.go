package xenstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// Message types, from enum xsd_sockmsg_type in Xen's
// xen/include/public/io/xs_wire.h (the order there is the ABI).
type msgType uint32

const (
	msgControl            msgType = 0 // XS_CONTROL, formerly XS_DEBUG
	msgDirectory          msgType = 1
	msgRead               msgType = 2
	msgGetPerms           msgType = 3
	msgWatch              msgType = 4
	msgUnwatch            msgType = 5
	msgTransactionStart   msgType = 6
	msgTransactionEnd     msgType = 7
	msgIntroduce          msgType = 8
	msgRelease            msgType = 9
	msgGetDomainPath      msgType = 10
	msgWrite              msgType = 11
	msgMkdir              msgType = 12
	msgRm                 msgType = 13
	msgSetPerms           msgType = 14
	msgWatchEvent         msgType = 15
	msgError              msgType = 16
	msgIsDomainIntroduced msgType = 17
	msgResume             msgType = 18
	msgSetTarget          msgType = 19
	msgRestrict           msgType = 20
	msgResetWatches       msgType = 21
	msgDirectoryPart      msgType = 22
)

var msgNames = map[msgType]string{
	msgControl: "control", msgDirectory: "directory", msgRead: "read", msgGetPerms: "get-perms",
	msgWatch: "watch", msgUnwatch: "unwatch", msgTransactionStart: "transaction-start",
	msgTransactionEnd: "transaction-end", msgIntroduce: "introduce", msgRelease: "release",
	msgGetDomainPath: "get-domain-path", msgWrite: "write", msgMkdir: "mkdir", msgRm: "rm",
	msgSetPerms: "set-perms", msgWatchEvent: "watch-event", msgError: "error",
	msgIsDomainIntroduced: "is-domain-introduced", msgResume: "resume", msgSetTarget: "set-target",
	msgRestrict: "restrict", msgResetWatches: "reset-watches", msgDirectoryPart: "directory-part",
}

func (t msgType) String() string {
	if s, ok := msgNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type-%d", uint32(t))
}

// Limits from xs_wire.h.
const (
	PayloadMax = 4096 // XENSTORE_PAYLOAD_MAX: longest message body
	AbsPathMax = 3072 // XENSTORE_ABS_PATH_MAX
	RelPathMax = 2048 // XENSTORE_REL_PATH_MAX

	headerLen = 16 // struct xsd_sockmsg: type, req_id, tx_id, len (uint32 each)
)

// errnoNames is xsd_errors[] from xs_wire.h: errors travel as their names.
var errnoNames = []struct {
	errno syscall.Errno
	name  string
}{
	{syscall.EINVAL, "EINVAL"}, {syscall.EACCES, "EACCES"}, {syscall.EEXIST, "EEXIST"},
	{syscall.EISDIR, "EISDIR"}, {syscall.ENOENT, "ENOENT"}, {syscall.ENOMEM, "ENOMEM"},
	{syscall.ENOSPC, "ENOSPC"}, {syscall.EIO, "EIO"}, {syscall.ENOTEMPTY, "ENOTEMPTY"},
	{syscall.ENOSYS, "ENOSYS"}, {syscall.EROFS, "EROFS"}, {syscall.EBUSY, "EBUSY"},
	{syscall.EAGAIN, "EAGAIN"}, {syscall.EISCONN, "EISCONN"}, {syscall.E2BIG, "E2BIG"},
}

// errnoFromName maps an XS_ERROR payload to an errno; unknown names map to
// EINVAL, as libxenstore does.
func errnoFromName(name string) syscall.Errno {
	for _, e := range errnoNames {
		if e.name == name {
			return e.errno
		}
	}
	return syscall.EINVAL
}

func errnoName(errno syscall.Errno) string {
	for _, e := range errnoNames {
		if e.errno == errno {
			return e.name
		}
	}
	return "EINVAL"
}

// message is one frame on the wire: a header and its body.
type message struct {
	typ   msgType
	reqID uint32
	txID  uint32
	body  []byte
}

// encode returns the frame as sent on the wire.
func (m message) encode() ([]byte, error) {
	if len(m.body) > PayloadMax {
		return nil, fmt.Errorf("payload of %d bytes exceeds %d: %w", len(m.body), PayloadMax, syscall.E2BIG)
	}
	b := make([]byte, headerLen, headerLen+len(m.body))
	binary.LittleEndian.PutUint32(b[0:], uint32(m.typ))
	binary.LittleEndian.PutUint32(b[4:], m.reqID)
	binary.LittleEndian.PutUint32(b[8:], m.txID)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(m.body)))
	return append(b, m.body...), nil
}

// readMessage reads one frame. A body longer than PayloadMax is a protocol
// violation: the stream cannot be trusted afterwards.
func readMessage(r io.Reader) (message, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return message{}, err
	}
	m := message{
		typ:   msgType(binary.LittleEndian.Uint32(h[0:])),
		reqID: binary.LittleEndian.Uint32(h[4:]),
		txID:  binary.LittleEndian.Uint32(h[8:]),
	}
	n := binary.LittleEndian.Uint32(h[12:])
	if n > PayloadMax {
		return message{}, fmt.Errorf("%s message announces %d bytes, more than %d", m.typ, n, PayloadMax)
	}
	m.body = make([]byte, n)
	if _, err := io.ReadFull(r, m.body); err != nil {
		return message{}, fmt.Errorf("%s message truncated: %w", m.typ, noEOF(err))
	}
	return m, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// join builds a body of NUL-terminated strings.
func join(strs ...string) []byte {
	var b bytes.Buffer
	for _, s := range strs {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// split parses a body of NUL-terminated strings; ok is false when the body
// does not end with a NUL.
func split(body []byte) (strs []string, ok bool) {
	if len(body) == 0 {
		return nil, true
	}
	if body[len(body)-1] != 0 {
		return nil, false
	}
	return strings.Split(string(body[:len(body)-1]), "\x00"), true
}

// checkPath rejects what xenstored would reject for length or embedded NUL,
// so that a bad path fails here with a clear message. Characters and
// "//" are left to xenstored, which answers EINVAL.
func checkPath(path string) error {
	switch {
	case path == "":
		return fmt.Errorf("empty path: %w", syscall.EINVAL)
	case strings.IndexByte(path, 0) >= 0:
		return fmt.Errorf("path contains NUL: %w", syscall.EINVAL)
	case path[0] == '/' && len(path) > AbsPathMax:
		return fmt.Errorf("absolute path of %d bytes exceeds %d: %w", len(path), AbsPathMax, syscall.EINVAL)
	case path[0] != '/' && len(path) > RelPathMax:
		return fmt.Errorf("relative path of %d bytes exceeds %d: %w", len(path), RelPathMax, syscall.EINVAL)
	}
	return nil
}
