package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Key identifies a pooled connection (reference: ztunnel's WorkloadKey). It is comparable.
type Key struct {
	SrcIdentity   string         // our SPIFFE id
	DstIdentities string         // expected peer SPIFFE ids, sorted, joined by ","
	Dst           netip.AddrPort // TCP destination, e.g. podIP:15008
	SrcIP         netip.Addr     // source IP of the tunnel socket
}

func (k Key) String() string {
	return fmt.Sprintf("%s->%s[%s] from %s", k.SrcIdentity, k.Dst, k.DstIdentities, k.SrcIP)
}

// PoolConfig configures a Pool. Zero values mean the defaults given per field.
type PoolConfig struct {
	Config
	// MaxStreamsPerConn is the most streams one connection carries; also capped by the peer's
	// SETTINGS_MAX_CONCURRENT_STREAMS. Zero means 100.
	MaxStreamsPerConn int
	// IdleTimeout closes a connection that has had no streams for this long. Zero means 5 minutes.
	IdleTimeout time.Duration
	// SpreadConns is how many connections per key the pool may open to spread streams over (the
	// crypto of one TLS connection runs on one core at each end): once every connection of a key
	// carries SpreadAt streams or more, the next stream dials another, up to SpreadConns. New
	// streams go to the least loaded of the first SpreadConns connections with room (see
	// pickConn). Zero or 1 means no spreading: a new connection
	// only when the others are full, as in the reference. Spreading trades batching for
	// parallelism: on a 2-core machine 8 bulk streams went from 0.98x to 1.16x the throughput of
	// one with 2 connections, but new connections per second from 0.42x to 0.35x of direct.
	SpreadConns int
	// SpreadAt is the stream count from which a connection counts as busy for SpreadConns. Zero
	// means 4.
	SpreadAt int
	// Dial opens the raw TCP connection (required). Its ctx carries the Key (see KeyFromContext), so it
	// can bind to Key.SrcIP.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig returns the client TLS config for a key (required). The pool forces TLS 1.3 and ALPN h2.
	TLSConfig func(ctx context.Context, k Key) (*tls.Config, error)
}

func (c PoolConfig) withDefaults() PoolConfig {
	c.Config = c.Config.withDefaults()
	if c.MaxStreamsPerConn <= 0 {
		c.MaxStreamsPerConn = 100
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.SpreadConns <= 0 {
		c.SpreadConns = 1
	}
	if c.SpreadAt <= 0 {
		c.SpreadAt = 4
	}
	return c
}

// spreadRetry is how long a key does not spread again after dialing an extra connection failed;
// spreadWait is how long a new stream waits for an extra connection being dialed before it takes
// a busy one.
const (
	spreadRetry = 30 * time.Second
	spreadWait  = 20 * time.Millisecond
)

// maxConnectAttempts bounds how often Connect retries a request the server did not process (GOAWAY,
// REFUSED_STREAM) on another connection.
const maxConnectAttempts = 3

// Pool is the HBONE client: a set of HTTP/2 connections per Key carrying CONNECT streams.
// It is safe for concurrent use.
type Pool struct {
	cfg PoolConfig

	mu       sync.Mutex         // guards the fields below; taken before conn.mu
	conns    map[Key][]*conn    // connections that take new streams
	all      map[*conn]struct{} // every open connection, including draining ones (GOAWAY received)
	dialing  map[Key]*dialCall
	noSpread map[Key]time.Time // a spreading dial failed: no more before this time (removed after)
	closed   bool
}

// dialCall is an in-flight dial for a key; done is closed when it finished, err is then set.
type dialCall struct {
	done chan struct{}
	err  error
}

// NewPool returns a pool. cfg.Dial and cfg.TLSConfig are required (Connect fails without them).
func NewPool(cfg PoolConfig) *Pool {
	return &Pool{
		cfg:      cfg.withDefaults(),
		conns:    make(map[Key][]*conn),
		all:      make(map[*conn]struct{}),
		dialing:  make(map[Key]*dialCall),
		noSpread: make(map[Key]time.Time),
	}
}

type keyCtxKey struct{}

// KeyFromContext returns the Key a PoolConfig.Dial or TLSConfig call is dialing for.
func KeyFromContext(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(keyCtxKey{}).(Key)
	return k, ok
}

// Connect opens one CONNECT stream to k.Dst with :authority authority and the extra headers hdr. It
// reuses a pooled connection for k with a free stream slot, else dials one; there is at most one dial
// in flight per key (other callers wait for it, then re-check). It returns after a 200 response; other
// statuses return *StatusError.
func (p *Pool) Connect(ctx context.Context, k Key, authority string, hdr http.Header) (*Stream, error) {
	fields, err := requestFields(authority, hdr)
	if err != nil {
		return nil, fmt.Errorf("hbone connect %s via %s: %w", authority, k.Dst, err)
	}
	for attempt := 1; ; attempt++ {
		c, err := p.getConn(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("hbone connect %s via %s: %w", authority, k.Dst, err)
		}
		s, err := c.openStream(ctx, fields)
		if err == nil {
			return s, nil
		}
		if !isRetryable(err) || attempt == maxConnectAttempts || ctx.Err() != nil {
			return nil, fmt.Errorf("hbone connect %s via %s: %w", authority, k.Dst, err)
		}
	}
}

// getConn returns a connection for k with one stream slot reserved.
func (p *Pool) getConn(ctx context.Context, k Key) (*conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		conns := p.conns[k]
		best, load := pickConn(conns, p.cfg.MaxStreamsPerConn, p.cfg.SpreadConns)
		spread := best != nil && load >= p.cfg.SpreadAt && len(conns) < p.cfg.SpreadConns
		if until, ok := p.noSpread[k]; ok && spread {
			if time.Now().Before(until) {
				spread = false
			} else {
				delete(p.noSpread, k)
			}
		}
		if best != nil && spread {
			if dc := p.dialing[k]; dc != nil {
				// Another stream is dialing the extra connection: wait a little for it (streams
				// that start together then spread evenly), else stay on the busy one.
				p.mu.Unlock()
				t := time.NewTimer(spreadWait)
				select {
				case <-dc.done:
					t.Stop()
					continue
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				}
				p.mu.Lock()
				spread = false
			}
		}
		if best != nil && !spread {
			if best.tryReserve(p.cfg.MaxStreamsPerConn) {
				p.mu.Unlock()
				return best, nil
			}
			p.mu.Unlock()
			continue // it filled up or died meanwhile: look again
		}
		if dc := p.dialing[k]; dc != nil {
			p.mu.Unlock()
			select {
			case <-dc.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// Share a real dial failure; a dial abandoned by its own caller's context is retried. (No
			// connection had room, best is nil: a spreading caller waited for dc above.)
			if dc.err != nil && !errors.Is(dc.err, context.Canceled) && !errors.Is(dc.err, context.DeadlineExceeded) {
				return nil, dc.err
			}
			continue
		}
		dc := &dialCall{done: make(chan struct{})}
		p.dialing[k] = dc
		p.mu.Unlock()

		c, err := p.dial(ctx, k)

		p.mu.Lock()
		delete(p.dialing, k)
		dc.err = err
		close(dc.done)
		if err != nil && best != nil {
			// Only spreading failed: use the connection there is, and do not try again soon.
			p.noSpread[k] = time.Now().Add(spreadRetry)
			p.mu.Unlock()
			continue
		}
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if p.closed {
			p.mu.Unlock()
			c.close(ErrPoolClosed)
			return nil, ErrPoolClosed
		}
		// Reserve before publishing, so the new conn cannot be filled up by others first. If it
		// already died (its onGone/onClosed ran before it was published), it is not published at all.
		if c.tryReserve(p.cfg.MaxStreamsPerConn) {
			p.conns[k] = append(p.conns[k], c)
			p.all[c] = struct{}{}
			p.mu.Unlock()
			return c, nil
		}
		p.mu.Unlock()
		c.close(&ConnError{Reason: "unusable right after dial"})
		c.wait()
	}
}

// pickConn returns the connection of conns a new stream goes to, and its stream count (open and
// reserved); nil if none has room below limit. Of the usable connections with room, in the order
// they were opened, it takes the least loaded of the first spread (SpreadConns).
//
// Without spreading (spread 1) that is the oldest connection with room: streams pack onto as few
// connections as they need, as in the reference. After a burst that needed extra connections
// (more than MaxStreamsPerConn streams at once), new streams therefore keep to the first ones and
// the extra ones go idle and close (IdleTimeout), instead of thinning the traffic over all of them
// for good: each connection then batches fewer frames per write and wakes its own read loop, and
// new connections per second fell by a quarter after 2 000 connections had been held.
func pickConn(conns []*conn, limit, spread int) (*conn, int) {
	var best *conn
	bestLoad, seen := 0, 0
	for _, c := range conns {
		l, ok := c.load(limit)
		if !ok {
			continue
		}
		if best == nil || l < bestLoad {
			best, bestLoad = c, l
		}
		if seen++; seen == spread {
			break
		}
	}
	return best, bestLoad
}

// dial opens, TLS-handshakes and starts a new connection for k.
func (p *Pool) dial(ctx context.Context, k Key) (*conn, error) {
	if p.cfg.Dial == nil || p.cfg.TLSConfig == nil {
		return nil, errors.New("hbone pool: Dial and TLSConfig are required")
	}
	ctx = context.WithValue(ctx, keyCtxKey{}, k)
	tcfg, err := p.cfg.TLSConfig(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("tls config for %v: %w", k, err)
	}
	tcfg = tcfg.Clone()
	tcfg.NextProtos = []string{"h2"}
	tcfg.MinVersion = tls.VersionTLS13
	raw, err := p.cfg.Dial(ctx, "tcp", k.Dst.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", k.Dst, err)
	}
	tc := tls.Client(newSockConn(raw), tcfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", k.Dst, err)
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
		_ = tc.Close()
		return nil, fmt.Errorf("tls handshake with %s: negotiated ALPN %q, want h2", k.Dst, proto)
	}
	c := newClientConn(tc, p.cfg.Config, p.cfg.IdleTimeout, func(c *conn) { p.remove(k, c) }, p.forget)
	c.log.Debug("hbone connection established", "key", k.String())
	return c, nil
}

// remove drops c from the pool (it got GOAWAY, went idle, or died).
func (p *Pool) remove(k Key, c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.conns[k]
	if i := slices.Index(list, c); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(p.conns, k)
	} else {
		p.conns[k] = list
	}
}

// forget drops a closed connection.
func (p *Pool) forget(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.all, c)
}

// NumConns returns how many connections the pool offers for new streams (for tests and metrics);
// connections draining after GOAWAY are not counted.
func (p *Pool) NumConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.conns {
		n += len(l)
	}
	return n
}

// Close closes every connection (their streams fail) and makes later Connect calls fail with
// ErrPoolClosed. It waits for the connections' goroutines to exit. The connections close in parallel,
// each within about 250 ms even if its peer stopped reading, so Close returns within about that long
// however many connections there are.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	all := make([]*conn, 0, len(p.all))
	for c := range p.all {
		all = append(all, c)
	}
	clear(p.conns)
	p.mu.Unlock()
	closeAll(all, ErrPoolClosed, true)
	return nil
}

// closeAll closes conns in parallel with cause (each close waits up to closeGrace for a stuck peer),
// and returns when all are closed and, if wait, their read loops and writers have exited.
func closeAll(conns []*conn, cause error, wait bool) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.close(cause)
			if wait {
				c.wait()
			}
		})
	}
	wg.Wait()
}
