package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/disco-lb/disco/core"
)

// ParseError says what is wrong with a file, and where.
type ParseError struct {
	Path   string
	Line   int // 1-based; 0 when the error is about the whole file
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Reason)
}

// Unwrap classifies a parse error as core.ErrInvalid.
func (e *ParseError) Unwrap() error { return core.ErrInvalid }

// definition is one target's endpoints as one file gives them.
type definition struct {
	set  core.Set
	line int
}

// Parse reads the targets and endpoints of one file's contents: disco's
// format (a mapping with a "targets" list) or Prometheus file_sd (a list of
// groups, whose target is the file's name without its extension), in YAML
// or JSON. path names the file in errors and, for file_sd, the target. A
// *ParseError (wrapping core.ErrInvalid) says what is wrong and on which
// line; nothing of a file with an error is used.
func Parse(path string, data []byte) (map[core.Target]core.Set, error) {
	defs, err := parse(path, data, parseOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[core.Target]core.Set, len(defs))
	for t, d := range defs {
		out[t] = d.set
	}
	return out, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseOptions are the Source's options that change what a file means.
type parseOptions struct {
	defaultPort uint16 // of a file_sd target without a port
}

func parse(path string, data []byte, opts parseOptions) (map[core.Target]definition, error) {
	bad := func(line int, format string, args ...any) error {
		return &ParseError{Path: path, Line: line, Reason: fmt.Sprintf(format, args...)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, bad(0, "empty file (write `targets: []` for no targets)")
	}
	if isJSON(path, trimmed) {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, bad(lineAt(data, se.Offset), "JSON: %v", se)
			}
			return nil, bad(0, "JSON: %v", err)
		}
		// JSON is YAML but for tabs, which JSON allows only as white
		// space between tokens: spaces there mean the same, on the same
		// lines.
		data = bytes.ReplaceAll(data, []byte("\t"), []byte(" "))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[1])
			problem := strings.TrimPrefix(msg, m[0])
			return nil, bad(problemLine(data, n, problem), "YAML: %s", problem)
		}
		return nil, bad(0, "YAML: %s", strings.TrimPrefix(msg, "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil, bad(0, "empty file (write `targets: []` for no targets)")
	}
	root := deref(doc.Content[0])
	p := &parser{path: path, bad: bad, defs: map[core.Target]definition{}, opts: opts}
	switch root.Kind {
	case yaml.SequenceNode:
		return p.fileSD(root)
	case yaml.MappingNode:
		return p.disco(root)
	}
	return nil, bad(root.Line, "want a mapping with a \"targets\" list (disco's format) or a list of groups (Prometheus file_sd), found %s", kind(root))
}

func isJSON(path string, trimmed []byte) bool {
	if strings.EqualFold(filepath.Ext(path), ".json") {
		return true
	}
	return trimmed[0] == '{' || trimmed[0] == '['
}

// lineAt returns the 1-based line of byte offset off.
func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

type parser struct {
	path string
	bad  func(line int, format string, args ...any) error
	defs map[core.Target]definition
	opts parseOptions
}

// problemLine finds the line a YAML error is on. yaml.v3 reports the line
// where the enclosing block starts (a bad indent on line 904 of a file
// reads "line 1"): the error is on the first line from there whose prefix
// of the file, cut after it, fails the same way. Found by bisection
// (O(log n) parses); reported is kept if the search does not confirm it.
func problemLine(data []byte, reported int, problem string) int {
	ends := []int{} // offset after each line
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	fails := func(k int) bool { // the first k lines fail with problem
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[k-1]], &n)
		return err != nil && strings.HasSuffix(err.Error(), ": "+problem)
	}
	lo, hi := max(reported, 1), len(ends)
	if lo > hi || !fails(hi) {
		return reported
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo > max(reported, 1) && fails(lo-1) {
		return reported // not monotonic: do not guess
	}
	return lo
}

// fields returns a mapping's keys and values, refusing keys not in known.
func (p *parser) fields(n *yaml.Node, what string, known ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.bad(n.Line, "%s: want a mapping, found %s", what, kind(n))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if !slices.Contains(known, k.Value) {
			return nil, p.bad(k.Line, "%s: unknown field %q (known: %s)", what, k.Value, strings.Join(known, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.bad(k.Line, "%s: field %q given twice", what, k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}

func (p *parser) str(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.bad(n.Line, "%s: want a string, found %s", what, kind(n))
	}
	return n.Value, nil
}

func (p *parser) list(n *yaml.Node, what string) ([]*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil // "endpoints:" with nothing after it: none
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.bad(n.Line, "%s: want a list, found %s", what, kind(n))
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = deref(c)
	}
	return out, nil
}

// disco reads
//
//	targets:
//	  - target: greeter            # core.HostSyntax: name, namespace/name, name:port
//	    endpoints:
//	      - 10.0.0.1:50051         # host:port
//	      - addresses: [10.0.0.2, fd00::2]   # core.Endpoint's JSON fields
//	        port: 50051
//	        zone: zone-a
func (p *parser) disco(root *yaml.Node) (map[core.Target]definition, error) {
	top, err := p.fields(root, "file", "targets")
	if err != nil {
		return nil, err
	}
	tn, ok := top["targets"]
	if !ok {
		return nil, p.bad(root.Line, "no \"targets\" list")
	}
	targets, err := p.list(tn, "targets")
	if err != nil {
		return nil, err
	}
	for i, tnode := range targets {
		what := fmt.Sprintf("targets[%d]", i)
		f, err := p.fields(tnode, what, "target", "endpoints")
		if err != nil {
			return nil, err
		}
		name, ok := f["target"]
		if !ok {
			return nil, p.bad(tnode.Line, "%s: no \"target\"", what)
		}
		text, err := p.str(name, what+".target")
		if err != nil {
			return nil, err
		}
		t, err := core.ParseTarget(text, core.HostSyntax)
		if err != nil {
			return nil, p.bad(name.Line, "%s.target: %v", what, err)
		}
		var eps []*yaml.Node
		if en, ok := f["endpoints"]; ok {
			if eps, err = p.list(en, what+".endpoints"); err != nil {
				return nil, err
			}
		}
		if err := p.define(t, tnode.Line, eps, func(j int, n *yaml.Node) (*core.Endpoint, error) {
			return p.endpoint(n, fmt.Sprintf("%s (%s) endpoints[%d]", what, t, j))
		}); err != nil {
			return nil, err
		}
	}
	return p.defs, nil
}

// fileSD reads Prometheus' file_sd format: a list of {targets: [host:port],
// labels: {name: value}}. The groups make one target, named after the file.
func (p *parser) fileSD(root *yaml.Node) (map[core.Target]definition, error) {
	base := filepath.Base(p.path)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	t, err := core.ParseTarget(base, core.HostSyntax)
	if err != nil {
		return nil, p.bad(0, "file_sd: the target is the file's name without its extension, and %q is no target name: %v", base, err)
	}
	type item struct {
		n      *yaml.Node
		labels map[string]string
	}
	var items []item
	for i, g := range root.Content {
		g = deref(g)
		what := fmt.Sprintf("group %d", i)
		f, err := p.fields(g, what, "targets", "labels")
		if err != nil {
			return nil, err
		}
		var labels map[string]string
		if ln, ok := f["labels"]; ok && !(ln.Kind == yaml.ScalarNode && ln.Tag == "!!null") {
			if ln.Kind != yaml.MappingNode {
				return nil, p.bad(ln.Line, "%s.labels: want a mapping of strings, found %s", what, kind(ln))
			}
			labels = map[string]string{}
			for j := 0; j+1 < len(ln.Content); j += 2 {
				k, v := ln.Content[j], deref(ln.Content[j+1])
				if k.Value == "" {
					return nil, p.bad(k.Line, "%s.labels: an empty label name", what)
				}
				if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
					return nil, p.bad(v.Line, "%s.labels.%s: want a string, found %s", what, k.Value, kind(v))
				}
				labels[k.Value] = v.Value
			}
		}
		tn, ok := f["targets"]
		if !ok {
			continue // a group without targets adds none, as in Prometheus
		}
		list, err := p.list(tn, what+".targets")
		if err != nil {
			return nil, err
		}
		for _, n := range list {
			items = append(items, item{n, labels})
		}
	}
	// A target listed in two groups is one backend: the first group's
	// labels win (Prometheus scrapes it twice, with each group's labels;
	// a balancer must not send it twice the traffic).
	var nodes []*yaml.Node
	var eps []*core.Endpoint
	seen := map[string]bool{}
	for j, it := range items {
		n := it.n
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			return nil, p.bad(n.Line, "file_sd target %d: want \"host\" or \"host:port\", found %s", j, kind(n))
		}
		e, err := fileSDTarget(n.Value, p.opts.defaultPort)
		if err != nil {
			return nil, p.bad(n.Line, "file_sd target %q: %v", n.Value, err)
		}
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		if len(it.labels) > 0 {
			e.Labels = maps.Clone(it.labels)
		}
		nodes = append(nodes, n)
		eps = append(eps, e)
	}
	if err := p.define(t, root.Line, nodes, func(j int, _ *yaml.Node) (*core.Endpoint, error) { return eps[j], nil }); err != nil {
		return nil, err
	}
	return p.defs, nil
}

// fileSDTarget reads a Prometheus target: "host:port", "[v6]:port", or a
// host without a port, which takes defaultPort (0: none). Its ID is the
// target as written, as Prometheus' __address__ is.
func fileSDTarget(s string, defaultPort uint16) (*core.Endpoint, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q: want a number from 1 to 65535", port)
		}
		if host == "" {
			return nil, errors.New("no host")
		}
		return &core.Endpoint{ID: s, Addresses: []string{host}, Port: uint16(n)}, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if host == "" || strings.ContainsAny(host, " /") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		return nil, errors.New("want host or host:port")
	}
	e := &core.Endpoint{ID: s, Addresses: []string{host}, Port: defaultPort}
	if defaultPort != 0 {
		e.ID = net.JoinHostPort(host, strconv.Itoa(int(defaultPort)))
	}
	return e, nil
}

// define builds t's set from nodes, each endpoint checked on its own line,
// and refuses a target given twice in one file and an endpoint ID given
// twice in one target.
func (p *parser) define(t core.Target, line int, nodes []*yaml.Node, endpoint func(int, *yaml.Node) (*core.Endpoint, error)) error {
	if prev, dup := p.defs[t]; dup {
		return p.bad(line, "target %s given twice (also line %d)", t, prev.line)
	}
	eps := make([]*core.Endpoint, 0, len(nodes))
	ids := map[string]int{}
	for j, n := range nodes {
		e, err := endpoint(j, n)
		if err != nil {
			return err
		}
		if err := e.Validate(); err != nil {
			return p.bad(n.Line, "target %s: %v", t, strings.TrimPrefix(err.Error(), "core: "))
		}
		id := e.ID
		if id == "" {
			id = e.HostPort()
		}
		if prev, dup := ids[id]; dup {
			return p.bad(n.Line, "target %s: endpoint %q given twice (also line %d)", t, id, prev)
		}
		ids[id] = n.Line
		eps = append(eps, e)
	}
	set, err := core.NewSet(eps...)
	if err != nil {
		return p.bad(line, "target %s: %v", t, err)
	}
	p.defs[t] = definition{set: set, line: line}
	return nil
}

// endpoint reads "host:port" or a mapping of core.Endpoint's JSON fields
// (the wire form's), unknown fields refused.
func (p *parser) endpoint(n *yaml.Node, what string) (*core.Endpoint, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			break
		}
		e, err := hostPort(n.Value)
		if err != nil {
			return nil, p.bad(n.Line, "%s: %q: %v", what, n.Value, err)
		}
		return e, nil
	case yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return nil, p.bad(n.Line, "%s: %v", what, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, p.bad(n.Line, "%s: %v", what, err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var e core.Endpoint
		if err := dec.Decode(&e); err != nil {
			return nil, p.bad(n.Line, "%s: %s", what, strings.TrimPrefix(err.Error(), "json: "))
		}
		if e.Port == 0 {
			return nil, p.bad(n.Line, "%s: no port (1 to 65535)", what)
		}
		return &e, nil
	}
	return nil, p.bad(n.Line, "%s: want \"host:port\" or a mapping, found %s", what, kind(n))
}

// hostPort reads "10.0.0.1:80", "[fd00::1]:80" or "name:80".
func hostPort(s string) (*core.Endpoint, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("want host:port: %v", strings.TrimPrefix(err.Error(), "address "+s+": "))
	}
	if host == "" {
		return nil, errors.New("no host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return &core.Endpoint{Addresses: []string{host}, Port: uint16(n)}, nil
}
