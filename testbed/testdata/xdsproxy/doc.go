// Command xdsproxy stands in for the node proxy in the testbed's own tests of Config.ControlPlane:
// started like the proxy, it checks its environment, gets a certificate from CA_ADDRESS for its
// own identity (impersonating it, as shared mode does) and follows XDS_ADDRESS with the project's
// xDS client until SIGTERM, logging each snapshot. It carries no traffic and ignores INPOD_UDS.
//
// It lives under testdata so that `go build ./...` and `go test ./...` leave it alone; the
// testbed tests build it by path.
package main
