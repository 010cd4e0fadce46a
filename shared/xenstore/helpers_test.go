package xenstore

import (
	"path/filepath"
	"testing"
)

// startServer runs a Server on a socket in a fresh temporary directory.
func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := NewServer(filepath.Join(t.TempDir(), "xs.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, s *Server) *Client {
	t.Helper()
	c, err := DialPath(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
