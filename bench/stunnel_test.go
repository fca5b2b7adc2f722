package bench

import (
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/bench/relay"
)

func TestStunnelConf(t *testing.T) {
	files := relay.Files{Cert: "/d/a-cert.pem", Key: "/d/a-key.pem", CA: "/d/a-ca.pem"}
	client := stunnelConf(stunnelSide{client: true, accept: "172.30.0.1:16003", target: "172.30.0.2:16004", files: files})
	for _, want := range []string{"foreground = yes\n", "pid = \n", "[bench]\n", "client = yes\n",
		"accept = 172.30.0.1:16003\n", "connect = 172.30.0.2:16004\n", "cert = /d/a-cert.pem\n",
		"key = /d/a-key.pem\n", "CAfile = /d/a-ca.pem\n", "verifyChain = yes\n", "sslVersionMin = TLSv1.3\n"} {
		if !strings.Contains(client, want) {
			t.Errorf("client config lacks %q:\n%s", want, client)
		}
	}
	server := stunnelConf(stunnelSide{accept: "172.30.0.2:16004", target: "10.40.2.2:17000", files: files})
	if strings.Contains(server, "client =") {
		t.Errorf("server config has a client line:\n%s", server)
	}
	if !strings.Contains(server, "verifyChain = yes\n") {
		t.Errorf("server config does not verify (require) the client's chain:\n%s", server)
	}
}
