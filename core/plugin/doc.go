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
// The protocol (proto/disco/plugin/v2/plugin.proto) is versioned with
// go-plugin's protocol negotiation (ProtocolVersion), guarded by its
// handshake cookie (CookieKey, CookieValue), and runs over AutoMTLS. A
// source's watch is a server stream of events, the first set full, then
// deltas, and an END event with the Watch's error; a sink gets each update
// in core's delta form. Errors cross as data (kind, message, retry mark and
// delay, resync), so core's one error rule holds across the boundary: a
// retryable error is retried with a backoff and never touches the process.
//
// Faults: only a broken transport (a failed call and a failed ping), a
// plugin that exits, one that stops answering its health check, or one that
// makes no progress (WithProgressTimeout) is killed and restarted with a
// jittered backoff; a source's targets are watched again (their last good
// state kept, stale, meanwhile) and a sink gets, per target, the newest
// state that may have reached the old process. After a bound of restarts in
// a row the host gives up with an error naming the binary, the number of
// starts and the last failure (ErrGaveUp). Errors starting a binary name it
// and say what was wrong.
package plugin
