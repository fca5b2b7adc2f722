package load

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Modes, the first byte a client sends.
const (
	ModeSink byte = 'S'
	ModeEcho byte = 'E'
	ModeOnce byte = 'O'
)

// BufSize is the size of the read and write buffers of the server and the throughput client.
const BufSize = 256 << 10

// modeTimeout bounds the wait for a connection's first byte.
const modeTimeout = 30 * time.Second

// Server serves the benchmark protocol (see the package doc) on one listener.
type Server struct {
	ln net.Listener
	wg sync.WaitGroup // accept loop and connection handlers

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// Serve starts serving ln in the background. Close stops it.
func Serve(ln net.Listener) *Server {
	s := &Server{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close closes the listener and every open connection and waits for the handlers to return.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	open := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// handle serves one connection and closes it.
func handle(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	c.SetReadDeadline(time.Now().Add(modeTimeout))
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	switch mode[0] {
	case ModeOnce:
		c.Write(mode[:])
	case ModeSink:
		n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{c}, make([]byte, BufSize))
		if err != nil {
			return
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	case ModeEcho:
		if _, err := io.CopyBuffer(writerOnly{c}, readerOnly{c}, make([]byte, 64<<10)); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
}

// readerOnly and writerOnly hide a connection's ReadFrom/WriteTo so io.CopyBuffer uses the given
// buffer instead of the connection's own copy path.
type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }
