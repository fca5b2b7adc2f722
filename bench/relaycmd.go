package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ztunnel-go/ztunnel/bench/relay"
)

// RelayMain runs one side of the tls relay pair, the harness binary's "relay" command, until
// SIGTERM or SIGINT; args are the command's flags. It prints "relay listening on <addr>" once it
// accepts. The return value is the exit status.
func RelayMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "accept on this `ip:port`")
	target := fs.String("target", "", "forward every connection to this `ip:port`")
	acceptTLS := fs.Bool("accept-tls", false, "accept TLS and dial plain TCP (default: accept plain TCP, dial TLS)")
	cert := fs.String("cert", "", "certificate chain `file` (PEM)")
	key := fs.String("key", "", "private key `file` (PEM, PKCS#8)")
	ca := fs.String("ca", "", "root certificate `file` (PEM) the peer must chain to")
	peer := fs.String("peer", "", "URI SAN (SPIFFE ID) the TLS server must have (without -accept-tls)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files := relay.Files{Cert: *cert, Key: *key, CA: *ca}
	cfg := relay.Config{Listen: *listen, Target: *target, AcceptTLS: *acceptTLS,
		Logger: slog.New(slog.NewTextHandler(stderr, nil))}
	var err error
	if *acceptTLS {
		cfg.TLS, err = relay.ServerTLS(files)
	} else {
		cfg.TLS, err = relay.ClientTLS(files, *peer)
	}
	if err != nil {
		fmt.Fprintln(stderr, "relay:", err)
		return 1
	}
	cfg.Ready = func(a net.Addr) { fmt.Fprintln(os.Stdout, "relay listening on", a) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := relay.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
