// Package etcd is disco's etcd source: the services registered in etcd by
// etcd's own gRPC naming (go.etcd.io/etcd/client/v3/naming/endpoints),
// go-zero, go-kit's sd/etcdv3 and kratos are discovered as they are, with
// no re-registration, and reach every disco sink (the pool, the zone-aware
// resolver, xDS, webhooks).
//
// A target is a key prefix: "greeter" reads every key under "greeter/".
// Each key is one endpoint; its value is read in the target's format
// (Auto by default: an etcd naming JSON value, a kratos instance, or a plain
// host:port). The source lists the prefix, then watches it from the
// list's revision: a dropped connection resumes from the last revision seen
// (etcd's client replays what was missed); a compaction past it, or a
// period where etcd could not be reached, is reconciled by a complete read
// before the state is fresh again. Meanwhile the last good set stays,
// marked stale. A key whose lease expires is deleted by etcd, and its
// endpoint leaves the set.
package etcd
