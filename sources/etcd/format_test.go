package etcd

import (
	"strings"
	"testing"
)

// Each registry's layout, as its library writes it.
func TestFormats(t *testing.T) {
	for _, c := range []struct {
		name   string
		format Format
		value  string
		want   string // host:port, or "error: <part of the error>"
	}{
		{"etcd naming (endpoints.Manager)", Auto, `{"Op":0,"Addr":"10.0.0.1:8080","Metadata":null}`, "10.0.0.1:8080"},
		{"etcd naming with metadata", EtcdNaming, `{"Op":0,"Addr":"[fd00::1]:8080","Metadata":{"zone":"a"}}`, "[fd00::1]:8080"},
		{"go-zero / go-kit: a plain address", Auto, "10.0.0.2:9000", "10.0.0.2:9000"},
		{"plain, a host name", Plain, "greeter-0.greeter.demo:9000", "greeter-0.greeter.demo:9000"},
		{"kratos instance, grpc endpoint", Auto, `{"id":"i-1","name":"greeter","version":"v2","metadata":{"zone":"a"},"endpoints":["http://10.0.0.3:8000","grpc://10.0.0.3:9000"]}`, "10.0.0.3:9000"},
		{"etcd naming delete op", EtcdNaming, `{"Op":1,"Addr":"10.0.0.1:8080"}`, "error: only Add (0)"},
		{"etcd naming without Addr", Auto, `{"Op":0}`, `error: without "Addr"`},
		{"not JSON", EtcdNaming, `{"Op":`, "error: not etcd naming JSON"},
		{"kratos without grpc", Kratos, `{"id":"i-2","endpoints":["http://10.0.0.4:8000"]}`, "error: no grpc:// endpoint"},
		{"no port", Plain, "10.0.0.5", `error: want host:port`},
		{"bad port", Plain, "10.0.0.5:99999", `error: port "99999"`},
	} {
		e, err := endpoint("svc/"+c.name, []byte(c.value), c.format, "grpc")
		if rest, ok := strings.CutPrefix(c.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), rest) {
				t.Errorf("%s: %v, want an error with %q", c.name, err, rest)
			}
			continue
		}
		if err != nil || e.HostPort() != c.want || e.ID != "svc/"+c.name {
			t.Errorf("%s: %v %v, want %s", c.name, e, err, c.want)
		}
	}
	if e, _ := endpoint("k", []byte(`{"id":"i-1","version":"v2","metadata":{"zone":"a"},"endpoints":["grpc://10.0.0.3:9000"]}`), Kratos, "grpc"); e.Labels["version"] != "v2" || e.Labels["zone"] != "a" || e.Name != "i-1" {
		t.Errorf("kratos labels: %+v", e)
	}
}

func TestParseTarget(t *testing.T) {
	for text, want := range map[string]string{
		"greeter": "greeter", "etcd:///greeter": "greeter", "etcd:////microservices/greeter": "/microservices/greeter",
		"/microservices/greeter": "/microservices/greeter", "user.rpc": "user.rpc",
	} {
		if got, err := ParseTarget(text); err != nil || got.Name != want {
			t.Errorf("%q: %v %v, want %q", text, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "greeter/", "etcd://greeter", "a b"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
