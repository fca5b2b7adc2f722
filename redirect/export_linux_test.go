package redirect

// DialSetns is the dial path that switches the calling thread into the
// namespace for the whole dial, for comparison in tests and benchmarks.
var DialSetns = (*NetNS).dialSetns
