package zds

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

// maxMessageSize is the read buffer for one datagram, as in ztunnel.
const maxMessageSize = 1024

// maxFds is how many descriptors fit the control buffer; more is an error
// (MSG_CTRUNC), as is any count other than what the message needs.
const maxFds = 4

// errTruncated is returned for a datagram or control data larger than the buffer.
var errTruncated = errors.New("message truncated")

// errMalformed is returned for a datagram whose control data is not what ZDS sends: a
// control message other than SCM_RIGHTS, one that does not parse, or descriptors on an empty
// datagram.
var errMalformed = errors.New("malformed control data")

// badDatagram reports whether err from readPacket is about the datagram itself rather than
// the connection: the reader may answer it (NACK) before hanging up.
func badDatagram(err error) bool {
	return errors.Is(err, errTruncated) || errors.Is(err, errMalformed)
}

// readPacket reads one datagram and the descriptors sent with it. The
// caller owns the returned files. Go's ReadMsgUnix receives descriptors with
// MSG_CMSG_CLOEXEC on Linux. On error no files are returned: any received
// are closed, also when the read itself failed.
//
// Go reads a zero-length datagram on a SOCK_SEQPACKET socket as io.EOF; one
// that carries control data is not the end of the connection but a malformed
// message (errMalformed).
func readPacket(c *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, maxMessageSize)
	oob := make([]byte, unix.CmsgSpace(maxFds*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	files, ferr := parseRights(oob[:oobn])
	switch {
	case err != nil && oobn > 0 && n == 0 && errors.Is(err, io.EOF):
		ferr = fmt.Errorf("empty datagram with %d bytes of control data: %w", oobn, errMalformed)
	case err != nil:
		ferr = err
	case ferr != nil:
	case flags&unix.MSG_TRUNC != 0:
		ferr = fmt.Errorf("datagram larger than %d bytes: %w", maxMessageSize, errTruncated)
	case flags&unix.MSG_CTRUNC != 0:
		ferr = fmt.Errorf("control data (more than %d fds): %w", maxFds, errTruncated)
	}
	if ferr != nil {
		closeFiles(files)
		return nil, nil, ferr
	}
	return buf[:n], files, nil
}

// parseRights returns the SCM_RIGHTS descriptors in oob as files. Any other
// control message is an error; descriptors are closed on error.
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w: %w", errMalformed, err)
	}
	var files []*os.File
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("unexpected control message level %d type %d: %w", m.Header.Level, m.Header.Type, errMalformed)
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("parse SCM_RIGHTS: %w: %w", errMalformed, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "zds-fd"))
		}
	}
	if bad != nil {
		closeFiles(files)
		return nil, bad
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// checkSize returns an error if m does not fit one datagram.
func checkSize(m proto.Message) error {
	if n := proto.Size(m); n > maxMessageSize {
		return fmt.Errorf("%T of %d bytes exceeds the %d-byte ZDS datagram", m, n, maxMessageSize)
	}
	return nil
}

// writeMessage sends m as one datagram, with fd (if >= 0) as SCM_RIGHTS.
func writeMessage(c *net.UnixConn, m proto.Message, fd int) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	if len(b) > maxMessageSize {
		return fmt.Errorf("%T of %d bytes exceeds %d", m, len(b), maxMessageSize)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("write %T: %w", m, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("write %T: short write", m)
	}
	return nil
}

// maxAckText is the longest ACK error text sent: with the protobuf framing
// around it (at most 6 bytes) the response stays within one datagram.
const maxAckText = maxMessageSize - 16

// ackResponse returns the response to a request; errText "" is an ACK. A text
// that would not fit one datagram is cut (ending in "..."), and invalid UTF-8
// (which protobuf strings cannot carry) is replaced, so that the NACK is sent
// whatever the error quotes.
func ackResponse(errText string) *zdsapi.WorkloadResponse {
	errText = strings.ToValidUTF8(errText, "\uFFFD")
	if len(errText) > maxAckText {
		cut := maxAckText - len("...")
		for cut > 0 && !utf8.RuneStart(errText[cut]) {
			cut--
		}
		errText = errText[:cut] + "..."
	}
	return &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: errText}}}
}

// WorkloadInfo identifies the pod behind an AddWorkload.
type WorkloadInfo struct {
	Name, Namespace, ServiceAccount string
}

func (w WorkloadInfo) proto() *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

func infoFromProto(p *zdsapi.WorkloadInfo) WorkloadInfo {
	return WorkloadInfo{Name: p.GetName(), Namespace: p.GetNamespace(), ServiceAccount: p.GetServiceAccount()}
}
