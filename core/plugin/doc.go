// Package plugin runs disco sources and sinks as separate binaries over
// hashicorp/go-plugin's gRPC protocol, interchangeable with in-process
// ones: the host gets a plain core.Source or core.Sink, a plugin author
// serves one with one call. Neither side sees go-plugin or generated
// types.
//
// Host:
//
//	src, err := plugin.NewSource("/usr/libexec/disco/my-source", plugin.WithLogger(logger))
//	defer src.Close()
//	hub := core.NewHub(src) // then the gRPC resolver, a pool, a webhook...
//
// Plugin binary:
//
//	func main() { plugin.ServeSource(mySource{log: plugin.Logger()}) }
//
// The protocol (proto/disco/plugin/v1/plugin.proto) is versioned with
// go-plugin's protocol negotiation (ProtocolVersion), guarded by its
// handshake cookie (CookieKey, CookieValue), and runs over AutoMTLS. A source's watch is
// a server stream of events, the first full, then deltas; a sink gets each
// update in core's delta form and answers FAILED_PRECONDITION "resync" when
// it does not hold the base state.
//
// Faults: a plugin that exits or stops answering its health check is
// killed and restarted with a jittered backoff; a source's targets are
// watched again (their last good state kept, stale, meanwhile) and a sink
// gets the full state of every target replayed. After a bound of restarts
// in a row the host gives up with an error naming the binary (ErrGaveUp).
// Errors starting a binary name it and say what was wrong.
package plugin
