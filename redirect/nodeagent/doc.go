// Package nodeagent does, for one node, what istio-cni's node agent does for
// ambient pods: install the in-pod redirection rules in a pod's network
// namespace and hand the namespace to the node proxy over ZDS, and undo both
// when the pod goes away.
package nodeagent
