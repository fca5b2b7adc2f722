// Package redirecttest has helpers for privileged tests of the redirect
// packages: a root check and throwaway named network namespaces that are
// always deleted when the test ends.
package redirecttest
