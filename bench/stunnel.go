package bench

import (
	"fmt"
	"strings"

	"github.com/ztunnel-go/ztunnel/bench/relay"
)

// stunnelSide describes one stunnel process of the pair.
type stunnelSide struct {
	// client: accept plain TCP and connect with TLS; else accept TLS and connect plain.
	client         bool
	accept, target string // ip:port
	files          relay.Files
}

// stunnelConf renders the stunnel configuration of one side: foreground, no pid file, warnings
// only (per-connection notices would slow the connection-rate test), TLS 1.3, the peer's chain
// verified against the run's CA on both sides (verifyChain implies requireCert on the server
// side), and TCP_NODELAY on both sockets. stunnel cannot check a URI SAN, so unlike the Go relay
// the client side accepts any server certificate of the run's CA.
func stunnelConf(s stunnelSide) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	line("foreground", "yes")
	line("pid", "")
	line("syslog", "no")
	line("debug", "4")
	b.WriteString("\n[bench]\n")
	if s.client {
		line("client", "yes")
	}
	line("accept", s.accept)
	line("connect", s.target)
	line("cert", s.files.Cert)
	line("key", s.files.Key)
	line("CAfile", s.files.CA)
	line("verifyChain", "yes")
	line("sslVersionMin", "TLSv1.3")
	line("socket", "l:TCP_NODELAY=1")
	line("socket", "r:TCP_NODELAY=1")
	return b.String()
}
