package hbone

import (
	"bufio"
	"net"
)

// readBufConn is the socket under an HBONE connection's TLS layer with a read buffer: crypto/tls asks
// for one record (at most 16 KiB) at a time, so without it a bulk transfer costs a read(2) per
// record. With it, one read(2) takes up to readBufferSize bytes. Writes, deadlines and Close go to
// the socket directly.
//
// Read is not safe for concurrent use, as for the tls.Conn on top (it serialises its reads).
type readBufConn struct {
	net.Conn
	r *bufio.Reader
}

func newReadBufConn(nc net.Conn) *readBufConn {
	return &readBufConn{Conn: nc, r: bufio.NewReaderSize(nc, readBufferSize)}
}

func (c *readBufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
