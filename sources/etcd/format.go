package etcd

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/disco-lb/disco/core"
)

// Format is how a key's value names its endpoint.
type Format int

const (
	// Auto reads each value as the first of the formats below that fits:
	// a JSON object with "Addr" (EtcdNaming), a JSON object with
	// "endpoints" (Kratos), or a plain address (Plain).
	Auto Format = iota
	// EtcdNaming: etcd's own gRPC naming, as naming/endpoints.Manager
	// writes it: {"Op":0,"Addr":"10.0.0.1:8080","Metadata":...}.
	EtcdNaming
	// Plain: the value is "host:port" (go-zero's and go-kit sd/etcdv3's
	// registrations).
	Plain
	// Kratos: a kratos ServiceInstance, {"id":...,"name":...,"version":...,
	// "metadata":{...},"endpoints":["grpc://10.0.0.1:9000","http://..."]};
	// the endpoint of the configured scheme (WithScheme, default grpc).
	Kratos
)

func (f Format) String() string {
	switch f {
	case Auto:
		return "auto"
	case EtcdNaming:
		return "etcd"
	case Plain:
		return "plain"
	case Kratos:
		return "kratos"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// ParseFormat reads a format's name: auto, etcd, plain or kratos.
func ParseFormat(s string) (Format, error) {
	for _, f := range []Format{Auto, EtcdNaming, Plain, Kratos} {
		if f.String() == s {
			return f, nil
		}
	}
	return 0, fmt.Errorf("format %q: want auto, etcd, plain or kratos", s)
}

type etcdNaming struct {
	Op       *int            `json:"Op"`
	Addr     string          `json:"Addr"`
	Metadata json.RawMessage `json:"Metadata"`
}

type kratosInstance struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Metadata  map[string]string `json:"metadata"`
	Endpoints []string          `json:"endpoints"`
}

// endpoint reads the endpoint a key's value names. Its ID is the key (one
// registration, one endpoint).
func endpoint(key string, value []byte, f Format, scheme string) (*core.Endpoint, error) {
	v := strings.TrimSpace(string(value))
	if f == Auto {
		switch {
		case strings.HasPrefix(v, "{") && strings.Contains(v, `"endpoints"`):
			f = Kratos
		case strings.HasPrefix(v, "{"):
			f = EtcdNaming
		default:
			f = Plain
		}
	}
	var addr string
	e := &core.Endpoint{ID: key}
	switch f {
	case EtcdNaming:
		var n etcdNaming
		if err := json.Unmarshal(value, &n); err != nil {
			return nil, fmt.Errorf("not etcd naming JSON: %v", err)
		}
		if n.Op != nil && *n.Op != 0 {
			return nil, fmt.Errorf("etcd naming operation %d: only Add (0) names an endpoint", *n.Op)
		}
		if n.Addr == "" {
			return nil, fmt.Errorf(`etcd naming JSON without "Addr"`)
		}
		addr = n.Addr
	case Kratos:
		var k kratosInstance
		if err := json.Unmarshal(value, &k); err != nil {
			return nil, fmt.Errorf("not a kratos instance: %v", err)
		}
		for _, raw := range k.Endpoints {
			u, err := url.Parse(raw)
			if err == nil && u.Scheme == scheme {
				addr = u.Host
				break
			}
		}
		if addr == "" {
			return nil, fmt.Errorf("kratos instance %q has no %s:// endpoint (it has %v)", k.ID, scheme, k.Endpoints)
		}
		e.Name = k.ID
		if len(k.Metadata) > 0 || k.Version != "" {
			e.Labels = map[string]string{}
			for mk, mv := range k.Metadata {
				e.Labels[mk] = mv
			}
			if k.Version != "" {
				e.Labels["version"] = k.Version
			}
		}
	default:
		addr = v
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: want host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("address %q: port %q: want a number from 1 to 65535", addr, port)
	}
	if host == "" || strings.ContainsAny(host, " \t/") {
		return nil, fmt.Errorf("address %q: no host", addr)
	}
	e.Addresses, e.Port = []string{host}, uint16(n)
	return e, nil
}
