// Package file is disco's file source: targets and their endpoints listed
// in YAML or JSON files (disco's format, or Prometheus' file_sd as it is),
// followed as the files change.
//
//	src, err := file.New("/etc/disco/endpoints") // a file or a directory
//	hub := core.NewHub(src)
//	b := grpcresolver.New("file", hub) // file:///greeter
//
// disco's format (JSON: the same structure):
//
//	targets:
//	  - target: greeter               # core.HostSyntax: name, namespace/name, name:port
//	    endpoints:
//	      - 10.0.0.1:50051            # host:port
//	      - addresses: [10.0.0.2, "fd00::2"]   # core.Endpoint's JSON fields
//	        port: 50051
//	        zone: zone-a
//	        weight: 2
//	        labels: {version: v2}
//
// Prometheus file_sd (a list of {targets, labels} groups) is one target,
// named after the file without its extension: greeter.json is target
// "greeter"; each group's labels become its endpoints' labels.
//
// Changes are picked up from file-system events on the directory (read
// once a burst of events settles) and by reading every file again every
// interval, for file systems without events. Every way of writing a file
// works: in place, write and rename, an editor's save, and a Kubernetes
// ConfigMap volume's ..data link swap. A file is read whole or not at all:
// one that changed while it was read is read again. A file that fails to
// parse, is missing or empty for longer than a grace period keeps its last
// good endpoints in force, marked stale with the file, the line and what is
// wrong; a missing file's endpoints go after the grace period.
package file
