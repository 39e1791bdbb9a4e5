package file_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sources/file"
)

// lines renders a parse result as "target: id addrs port zone weight labels".
func lines(m map[core.Target]core.Set) []string {
	var out []string
	for t, s := range m {
		if s.Len() == 0 {
			out = append(out, t.String()+":")
		}
		for e := range s.All() {
			l := fmt.Sprintf("%s: %s %s %d", t, e.ID, strings.Join(e.Addresses, ","), e.Port)
			if e.Zone != "" {
				l += " zone=" + e.Zone
			}
			if e.Weight != 0 {
				l += fmt.Sprintf(" w=%d", e.Weight)
			}
			var ls []string
			for k, v := range e.Labels {
				ls = append(ls, k+"="+v)
			}
			slices.Sort(ls)
			if len(ls) > 0 {
				l += " " + strings.Join(ls, ",")
			}
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func TestParseFormats(t *testing.T) {
	for _, tc := range []struct {
		name, path, data string
		want             []string
	}{
		{"disco YAML", "e.yaml", `
targets:
  - target: greeter
    endpoints:
      - 10.0.0.1:50051
      - "[fd00::1]:50051"
      - addresses: [10.0.0.2, "fd00::2"]
        port: 50051
        zone: zone-a
        weight: 2
        labels: {version: v2}
  - target: demo/other:grpc
    endpoints: []
  - target: none
`, []string{
			"demo/other:grpc:",
			"greeter: 10.0.0.1:50051 10.0.0.1 50051",
			"greeter: 10.0.0.2:50051 10.0.0.2,fd00::2 50051 zone=zone-a w=2 version=v2",
			"greeter: [fd00::1]:50051 fd00::1 50051",
			"none:",
		}},
		{"disco JSON with tabs", "e.json", "{\n\t\"targets\": [\n\t\t{\"target\": \"greeter\", \"endpoints\": [\"10.0.0.1:80\", {\"id\": \"b\", \"addresses\": [\"10.0.0.2\"], \"port\": 80, \"conditions\": {\"ready\": false}}]}\n\t]\n}\n",
			[]string{"greeter: 10.0.0.1:80 10.0.0.1 80", "greeter: b 10.0.0.2 80"}},
		{"file_sd JSON", "/x/greeter.json", `[
  {"targets": ["10.0.0.1:9090", "10.0.0.2:9090"], "labels": {"env": "prod", "job": "greeter"}},
  {"targets": ["10.0.0.3:9091"]}
]`, []string{
			"greeter: 10.0.0.1:9090 10.0.0.1 9090 env=prod,job=greeter",
			"greeter: 10.0.0.2:9090 10.0.0.2 9090 env=prod,job=greeter",
			"greeter: 10.0.0.3:9091 10.0.0.3 9091",
		}},
		{"file_sd YAML", "greeter.yml", `
- targets: ['host-a.example:80']
  labels:
    dc: one
- targets: []
`, []string{"greeter: host-a.example:80 host-a.example 80 dc=one"}},
		{"file_sd empty", "greeter.json", `[]`, []string{"greeter:"}},
		{"no targets", "e.yaml", `targets: []`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := file.Parse(tc.path, []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got := lines(m); !slices.Equal(got, tc.want) {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// longFile is a valid disco file of n+3 lines ending in an endpoint list.
func longFile(n int) string {
	var b strings.Builder
	b.WriteString("targets:\n  - target: greeter\n    endpoints:\n")
	for i := range n {
		fmt.Fprintf(&b, "      - 10.%d.%d.%d:80\n", i/62500, i/250%250, i%250+1)
	}
	return b.String()
}

// Every error names the file and the line, and says what is wrong (the
// line the error is on, not where yaml.v3 says its enclosing block starts).
func TestParseErrorsNameFileLineAndReason(t *testing.T) {
	for _, tc := range []struct {
		name, path, data string
		line             int
		reason           string
	}{
		{"empty", "e.yaml", "  \n", 0, "empty file"},
		{"YAML syntax", "e.yaml", "targets:\n  - target: a\n    endpoints: [10.0.0.1:80\n", 3, "YAML"},
		{"YAML bad indent on line 5", "e.yaml", "targets:\n  - target: greeter\n    endpoints:\n      - 10.0.0.1:80\n     - 10.0.0.2:80\n", 5, "YAML"},
		{"YAML field out of place on line 6", "e.yaml", "targets:\n  - target: greeter\n    endpoints:\n      - 10.0.0.1:80\n      - 10.0.0.2:80\n  bad: x\n", 6, "YAML"},
		{"YAML bad indent on the last line of 904", "e.yaml", longFile(900) + "     - 10.9.9.9:80\n", 904, "YAML"},
		{"YAML tab", "e.yaml", "targets:\n\t- target: greeter\n", 2, "YAML"},
		{"JSON syntax", "e.json", "{\n  \"targets\": [\n    {\"target\": \"a\",}\n  ]\n}\n", 3, "JSON"},
		{"truncated JSON", "e.json", "{\n  \"targets\": [\n    {\"target\": \"a\"", 3, "JSON"},
		{"top level", "e.yaml", "hello\n", 1, "want a mapping"},
		{"unknown top field", "e.yaml", "targets: []\ntargetz: []\n", 2, `unknown field "targetz"`},
		{"no targets", "e.yaml", "{}\n", 1, `no "targets"`},
		{"target missing", "e.yaml", "targets:\n  - endpoints: []\n", 2, `no "target"`},
		{"bad target", "e.yaml", "targets:\n  - target: a//b\n", 2, "targets[0].target"},
		{"target twice", "e.yaml", "targets:\n  - target: a\n  - target: a\n", 3, "given twice (also line 2)"},
		{"bad host:port", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - 10.0.0.1\n", 4, "want host:port"},
		{"bad port", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - 10.0.0.1:99999\n", 4, "from 1 to 65535"},
		{"unknown endpoint field", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - adresses: [10.0.0.1]\n        port: 80\n", 4, `unknown field "adresses"`},
		{"wrong type", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - addresses: [10.0.0.1]\n        port: eighty\n", 4, "port"},
		{"no port", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - addresses: [10.0.0.1]\n", 4, "no port"},
		{"no address", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - port: 80\n", 4, "no address"},
		{"duplicate endpoint", "e.yaml", "targets:\n  - target: a\n    endpoints:\n      - 10.0.0.1:80\n      - 10.0.0.1:80\n", 5, "given twice (also line 4)"},
		{"file_sd group", "g.json", "[\n  {\"targets\": [\"10.0.0.1:80\"], \"label\": {}}\n]", 2, `unknown field "label"`},
		{"file_sd target", "g.json", "[\n  {\"targets\": [\n    \"10.0.0.1:http\"\n  ]}\n]", 3, "from 1 to 65535"},
		{"file_sd target not a host", "g.json", "[\n  {\"targets\": [\n    \"a b\"\n  ]}\n]", 3, "want host or host:port"},
		{"file_sd label", "g.yaml", "- targets: ['10.0.0.1:80']\n  labels:\n    a: [1]\n", 3, "want a string"},
		{"file_sd name", "a..b.json", "[]", 0, "file's name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := file.Parse(tc.path, []byte(tc.data))
			var pe *file.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a *ParseError", err)
			}
			if !errors.Is(err, core.ErrInvalid) {
				t.Errorf("%v does not wrap core.ErrInvalid", err)
			}
			if pe.Path != tc.path || pe.Line != tc.line || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("Parse = %q (line %d), want %s line %d saying %q", err, pe.Line, tc.path, tc.line, tc.reason)
			}
			if want := fmt.Sprintf("%s:%d: ", tc.path, tc.line); tc.line > 0 && !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("%q does not start with %q", err, want)
			}
		})
	}
}

// Parse never panics, and what it accepts is a valid set per target.
func FuzzParse(f *testing.F) {
	f.Add("e.yaml", "targets:\n  - target: a\n    endpoints: [10.0.0.1:80]\n")
	f.Add("g.json", `[{"targets":["10.0.0.1:80"],"labels":{"a":"b"}}]`)
	f.Add("e.json", `{"targets":[{"target":"a","endpoints":[{"addresses":["10.0.0.1"],"port":1}]}]}`)
	f.Add("e.yaml", "a: &x [*x]\n")
	f.Fuzz(func(t *testing.T, path, data string) {
		m, err := file.Parse(path, []byte(data))
		if err != nil {
			return
		}
		for tg, s := range m {
			if err := tg.Validate(); err != nil {
				t.Fatalf("accepted target %v: %v", tg, err)
			}
			for e := range s.All() {
				if err := e.Validate(); err != nil || e.Port == 0 {
					t.Fatalf("accepted endpoint %+v: %v", e, err)
				}
			}
		}
	})
}
