package xenstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []message{
		{typ: msgRead, reqID: 7, txID: 0, body: join("backend/vif/1/0/mac")},
		{typ: msgWrite, reqID: 1<<32 - 1, txID: 42, body: append(join("/a"), "v\x00with nul"...)},
		{typ: msgTransactionStart, body: join("")},
		{typ: msgWatchEvent, body: []byte{}},
		{typ: msgWrite, body: bytes.Repeat([]byte("x"), PayloadMax)},
	} {
		frame, err := m.encode()
		if err != nil {
			t.Fatalf("encode %s: %v", m.typ, err)
		}
		if got := binary.LittleEndian.Uint32(frame[12:]); got != uint32(len(m.body)) || len(frame) != headerLen+len(m.body) {
			t.Fatalf("%s: header len %d, frame %d bytes, body %d", m.typ, got, len(frame), len(m.body))
		}
		back, err := readMessage(bytes.NewReader(frame))
		if err != nil {
			t.Fatalf("decode %s: %v", m.typ, err)
		}
		if back.typ != m.typ || back.reqID != m.reqID || back.txID != m.txID || !bytes.Equal(back.body, m.body) {
			t.Fatalf("round trip: got %+v, want %+v", back, m)
		}
	}
}

func TestWireLayout(t *testing.T) {
	// struct xsd_sockmsg: four little-endian uint32, then the body.
	frame, _ := message{typ: msgRead, reqID: 0x01020304, txID: 5, body: []byte("a\x00")}.encode()
	want := []byte{2, 0, 0, 0, 4, 3, 2, 1, 5, 0, 0, 0, 2, 0, 0, 0, 'a', 0}
	if !bytes.Equal(frame, want) {
		t.Fatalf("frame % x, want % x", frame, want)
	}
}

func TestMessageBadInput(t *testing.T) {
	if _, err := (message{typ: msgWrite, body: make([]byte, PayloadMax+1)}).encode(); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("oversized encode: %v, want E2BIG", err)
	}
	hdr := func(n uint32) []byte {
		b := make([]byte, headerLen)
		binary.LittleEndian.PutUint32(b[0:], uint32(msgRead))
		binary.LittleEndian.PutUint32(b[12:], n)
		return b
	}
	for name, in := range map[string][]byte{
		"short header":  {1, 0, 0},
		"oversized len": hdr(PayloadMax + 1),
		"huge len":      hdr(1<<32 - 1),
		"short body":    append(hdr(10), "abc"...),
		"no body":       hdr(1),
	} {
		if _, err := readMessage(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := readMessage(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
	if _, err := readMessage(bytes.NewReader(append(hdr(4), "ab"...))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated body: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestStrings(t *testing.T) {
	for _, strs := range [][]string{{"a"}, {"a", "b", ""}, {""}, {"path", "token"}} {
		got, ok := split(join(strs...))
		if !ok || !reflect.DeepEqual(got, strs) {
			t.Errorf("split(join(%q)) = %q, %v", strs, got, ok)
		}
	}
	if got, ok := split(nil); !ok || got != nil {
		t.Errorf("split(nil) = %q, %v", got, ok)
	}
	if _, ok := split([]byte("no terminator")); ok {
		t.Error("split accepted a body without final NUL")
	}
}

func TestCheckPath(t *testing.T) {
	good := []string{"/", "/local/domain/0", "backend/vif/1/0", "@releaseDomain",
		"/" + strings.Repeat("a", AbsPathMax-1), strings.Repeat("a", RelPathMax)}
	bad := []string{"", "a\x00b", "/" + strings.Repeat("a", AbsPathMax), strings.Repeat("a", RelPathMax+1)}
	for _, p := range good {
		if err := checkPath(p); err != nil {
			t.Errorf("checkPath(%.20q...): %v", p, err)
		}
	}
	for _, p := range bad {
		if err := checkPath(p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("checkPath(%.20q...) = %v, want EINVAL", p, err)
		}
	}
}

func TestErrnoNames(t *testing.T) {
	for _, e := range errnoNames {
		if errnoFromName(e.name) != e.errno || errnoName(e.errno) != e.name {
			t.Errorf("%s does not round trip", e.name)
		}
	}
	if errnoFromName("EWHATEVER") != syscall.EINVAL {
		t.Error("unknown names must map to EINVAL, as in libxenstore")
	}
	if msgDirectoryPart.String() != "directory-part" || msgType(99).String() != "type-99" {
		t.Error("msgType.String")
	}
}
