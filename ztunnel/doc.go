// Package ztunnel is the node proxy and the composition root: it joins the leaves (workload,
// certs, hbone, redirect) into the data path of every enrolled pod.
//
// For each pod the node agent hands over (ZDS, in-pod mode) the proxy binds three listeners
// inside the pod's network namespace:
//
//	15001 outbound   app → redirected socket → original destination → workload lookup →
//	                 endpoint selection → HBONE tunnel from the pod's pool → remote node
//	15006 inbound    plaintext connections redirected to the pod → the app
//	15008 HBONE      mTLS HTTP/2 CONNECT from other proxies → the app, source IP preserved
//
// Reading outbound.go top to bottom walks the whole outbound data path; inbound.go is the
// other end. select.go is the reference's endpoint selection; the relay package moves the bytes
// and limits.go caps how many connections the proxy carries.
package ztunnel
