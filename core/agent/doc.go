// Package agent runs disco's sources and sinks from a config file, as a
// service: the library of the disco command (core/agent/disco is the
// default distribution, with every source and sink). A distribution is a
// main that passes the factories it includes (core.SourceFactory,
// core.SinkFactory) to Main; nothing registers itself, so it pulls in only
// the modules it names.
//
// The agent decodes its file strictly (an unknown key, a wrong type, a
// dangling reference or a bad target is an error naming the file, the line
// and the key), expands ${VAR} and ${VAR:-default} from the environment,
// reloads on a change of the file, on SIGHUP and on POST /-/reload (when
// enabled) without a restart, restarting only what changed, and serves
// /livez, /readyz, /metrics and a status page.
package agent
