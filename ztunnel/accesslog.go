package ztunnel

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// connInfo describes one proxied connection for the access log and the metrics.
// Field names follow the reference's access log (ztunnel-behavior.md §2.9).
type connInfo struct {
	Direction   string // "outbound" | "inbound"
	Protocol    string // "HBONE" | "DOUBLEHBONE" | "TCP"
	Src         netip.AddrPort
	SrcWorkload *workload.Workload
	SrcIdentity string
	Dst         netip.AddrPort // the address the client asked for
	ActualDst   netip.AddrPort // the address the proxy connected to
	HBONEAddr   string         // the :authority sent or received, if HBONE
	DstService  string         // "ns/hostname" of the service the VIP belonged to
	DstWorkload *workload.Workload
	DstIdentity string
	FromNetwork string // inbound: the client's network, when a network gateway relayed the tunnel
	Start       time.Time

	// DstSvc is the service the connection was for: outbound, the one whose VIP was dialed;
	// inbound, the local workload's service the client named or whose port matches. nil if none.
	DstSvc *workload.Service
	// Attempts counts the endpoints an outbound connection to a service tried (more than one after
	// a failed connect: see connectUpstream); the access log shows it when above one.
	Attempts int
	// opened holds the metric series of the labels from the moment the connection counted as
	// opened (see podProxy.opened); nil for connections refused before that, which are only
	// logged.
	opened *connSeries
}

// mutualTLS reports whether the connection is carried over mutual TLS (HBONE, single or double).
func (ci *connInfo) mutualTLS() bool {
	return ci.Protocol == "HBONE" || ci.Protocol == protocolDoubleHBONE
}

// view is how the connection appears in the admin dump.
func (ci *connInfo) view() ConnView {
	v := ConnView{Direction: ci.Direction, Src: ci.Src.String(), Protocol: ci.Protocol}
	if ci.Dst.IsValid() {
		v.OriginalDst = ci.Dst.String()
	}
	if ci.ActualDst.IsValid() {
		v.ActualDst = ci.ActualDst.String()
	}
	return v
}

// logConn writes the one access-log line of a finished connection: at INFO when it succeeded,
// at WARN with the error when it failed.
func logConn(log *slog.Logger, ci *connInfo, res relay.Result, err error) {
	if err == nil {
		err = res.Err
	}
	level, msg := slog.LevelInfo, "connection complete"
	if err != nil {
		level, msg = slog.LevelWarn, "connection failed"
	}
	if log == nil {
		log = slog.Default()
	}
	h := log.Handler()
	if !h.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	if th := directText(h); th != nil {
		bp := linePool.Get().(*[]byte)
		b := th.appendHeader((*bp)[:0], now, level, msg)
		b = appendConnAttrs(b, ci, res, err, now)
		th.writeLine(b)
		if cap(b) <= maxPooledLine {
			*bp = b[:0]
			linePool.Put(bp)
		}
		return
	}
	logConnRecord(h, ci, res, err, now, level, msg)
}

// appendConnAttrs writes the fields of the access-log line in slog's text format: the same
// keys, order and values as logConnRecord.
func appendConnAttrs(b []byte, ci *connInfo, res relay.Result, err error, now time.Time) []byte {
	b = appendAddrAttr(b, " src.addr=", ci.Src)
	b = appendAddrAttr(b, " dst.addr=", ci.Dst)
	if ci.HBONEAddr != "" {
		b = appendTextAttr(b, " dst.hbone_addr=", ci.HBONEAddr)
	}
	if w := ci.SrcWorkload; w != nil {
		b = appendTextAttr(b, " src.workload=", w.Name)
		b = appendTextAttr(b, " src.namespace=", w.Namespace)
	}
	if ci.SrcIdentity != "" {
		b = appendTextAttr(b, " src.identity=", ci.SrcIdentity)
	}
	if ci.DstService != "" {
		b = appendTextAttr(b, " dst.service=", ci.DstService)
	}
	if w := ci.DstWorkload; w != nil {
		b = appendTextAttr(b, " dst.workload=", w.Name)
		b = appendTextAttr(b, " dst.namespace=", w.Namespace)
	}
	if ci.DstIdentity != "" {
		b = appendTextAttr(b, " dst.identity=", ci.DstIdentity)
	}
	b = appendTextAttr(b, " direction=", ci.Direction)
	b = appendTextAttr(b, " protocol=", ci.Protocol)
	if ci.Attempts > 1 {
		b = strconv.AppendInt(append(b, " upstream.attempts="...), int64(ci.Attempts), 10)
	}
	b = strconv.AppendInt(append(b, " bytes_sent="...), res.Sent, 10)
	b = strconv.AppendInt(append(b, " bytes_recv="...), res.Received, 10)
	b = append(append(b, " duration="...), now.Sub(ci.Start).String()...)
	if err != nil {
		b = appendTextAttr(b, " error=", err.Error())
	}
	return b
}

// appendTextAttr writes key (" name=") and the string v.
func appendTextAttr(b []byte, key, v string) []byte {
	return appendTextString(append(b, key...), v)
}

// appendAddrAttr writes key and a as its String method spells it.
func appendAddrAttr(b []byte, key string, a netip.AddrPort) []byte {
	b = append(b, key...)
	switch {
	case !a.IsValid():
		return appendTextString(b, a.String())
	case a.Addr().Zone() == "":
		return a.AppendTo(b) // digits, dots, colons and brackets: never quoted
	}
	start := len(b)
	return quoteFrom(a.AppendTo(b), start)
}

// logConnRecord writes the access-log line through h as a record, for handlers other than
// NewTextHandler's (JSON, tests): the same line as Logger.LogAttrs (our handlers never add
// the source location), without walking the stack.
func logConnRecord(h slog.Handler, ci *connInfo, res relay.Result, err error, now time.Time, level slog.Level, msg string) {
	var buf [19]slog.Attr
	attrs := append(buf[:0],
		slog.String("src.addr", ci.Src.String()),
		slog.String("dst.addr", ci.Dst.String()),
	)
	if ci.HBONEAddr != "" {
		attrs = append(attrs, slog.String("dst.hbone_addr", ci.HBONEAddr))
	}
	if w := ci.SrcWorkload; w != nil {
		attrs = append(attrs, slog.String("src.workload", w.Name), slog.String("src.namespace", w.Namespace))
	}
	if ci.SrcIdentity != "" {
		attrs = append(attrs, slog.String("src.identity", ci.SrcIdentity))
	}
	if ci.DstService != "" {
		attrs = append(attrs, slog.String("dst.service", ci.DstService))
	}
	if w := ci.DstWorkload; w != nil {
		attrs = append(attrs, slog.String("dst.workload", w.Name), slog.String("dst.namespace", w.Namespace))
	}
	if ci.DstIdentity != "" {
		attrs = append(attrs, slog.String("dst.identity", ci.DstIdentity))
	}
	attrs = append(attrs,
		slog.String("direction", ci.Direction),
		slog.String("protocol", ci.Protocol),
	)
	if ci.Attempts > 1 {
		attrs = append(attrs, slog.Int("upstream.attempts", ci.Attempts))
	}
	attrs = append(attrs,
		slog.Int64("bytes_sent", res.Sent),
		slog.Int64("bytes_recv", res.Received),
		slog.Duration("duration", now.Sub(ci.Start)),
	)
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	r := slog.NewRecord(now, level, msg, 0)
	r.AddAttrs(attrs...)
	h.Handle(context.Background(), r) //nolint:errcheck // like Logger.LogAttrs: a failed log write has nowhere to go
}
