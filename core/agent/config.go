package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/disco-lb/disco/core"
)

// Config is an agent's configuration file, decoded and validated.
type Config struct {
	Log       LogConfig             `yaml:"log"`
	HTTP      HTTPConfig            `yaml:"http"`
	Shutdown  ShutdownConfig        `yaml:"shutdown"`
	Reload    ReloadConfig          `yaml:"reload"`
	Pipelines []Pipeline            `yaml:"pipelines"`
	Sources   map[string]*Component `yaml:"-"`
	Sinks     map[string]*Component `yaml:"-"`

	path string
}

// LogConfig: the level of the agent's logs (debug, info, warn, error;
// default info).
type LogConfig struct {
	Level string `yaml:"level"`
}

// HTTPConfig: where /livez, /readyz, /metrics, the status page and
// /-/reload are served (default 127.0.0.1:9102: loopback), and whether
// POST /-/reload is allowed (default no).
type HTTPConfig struct {
	Listen          string `yaml:"listen"`
	EnableLifecycle bool   `yaml:"enable_lifecycle"`
}

// ShutdownConfig: how long webhook deliveries in flight get to finish on
// SIGTERM (default 10s).
type ShutdownConfig struct {
	Drain time.Duration `yaml:"drain"`
}

// ReloadConfig: how often the file is checked for a change (default 1s;
// 0 in the file: the default). A change is applied once the file is
// quiet (the same contents twice, Settle apart; default 300ms).
type ReloadConfig struct {
	Interval time.Duration `yaml:"interval"`
	Settle   time.Duration `yaml:"settle"`
}

// Pipeline feeds the targets of a source to sinks. With no targets, its
// sinks must be demand-driven (an xDS server): they serve what their
// clients ask of the source.
type Pipeline struct {
	Source  string   `yaml:"source"`
	Targets []string `yaml:"targets"`
	Sinks   []string `yaml:"sinks"`

	targets []core.Target // parsed (by the source's factory)
}

// Component is a source or a sink of the file: its type, its config (the
// factory's, decoded), and what identifies its config for a reload.
type Component struct {
	Name   string
	Type   string
	Config any
	key    string // type and config: equal keys, nothing to restart
	line   int
}

var topKeys = []string{"log", "http", "shutdown", "reload", "sources", "sinks", "pipelines"}

// Load reads, decodes and validates the file at path with the factories;
// every error names the file, the line and the key.
func Load(path string, f Factories) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return Parse(path, data, f)
}

// Parse decodes and validates a config file's contents (path names it in
// errors).
func Parse(path string, data []byte, f Factories) (*Config, error) {
	p := &parser{path: path}
	cfg := p.parse(data, f)
	if len(p.errs) > 0 {
		return nil, &ConfigError{Path: path, Errs: p.errs}
	}
	return cfg, nil
}

// ConfigError is every problem of a config file, each naming its line.
type ConfigError struct {
	Path string
	Errs []string
}

func (e *ConfigError) Error() string {
	if len(e.Errs) == 1 {
		return e.Errs[0]
	}
	return fmt.Sprintf("%d problems:\n%s", len(e.Errs), strings.Join(e.Errs, "\n"))
}

func (e *ConfigError) Unwrap() error { return core.ErrInvalid }

type parser struct {
	path    string
	errs    []string
	invalid map[string]bool // "sources.x", "sinks.y": named in the file, in error already
}

func (p *parser) errorf(line int, key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if key != "" {
		msg = key + ": " + msg
	}
	p.errs = append(p.errs, fmt.Sprintf("%s:%d: %s", p.path, line, msg))
}

func (p *parser) parse(data []byte, f Factories) *Config {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := 1, err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			fmt.Sscan(m[1], &line)
			msg = yamlLine.ReplaceAllString(msg, "")
		}
		p.errorf(line, "", "%s", strings.TrimPrefix(msg, "yaml: "))
		return nil
	}
	cfg := &Config{path: p.path, Sources: map[string]*Component{}, Sinks: map[string]*Component{}}
	if len(doc.Content) == 0 {
		p.errorf(1, "", "empty file: want sources, sinks and pipelines")
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.errorf(root.Line, "", "want a mapping of %s", strings.Join(topKeys, ", "))
		return nil
	}
	p.expand(root)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "log":
			p.decode(v, "log", &cfg.Log)
		case "http":
			p.decode(v, "http", &cfg.HTTP)
		case "shutdown":
			p.decode(v, "shutdown", &cfg.Shutdown)
		case "reload":
			p.decode(v, "reload", &cfg.Reload)
		case "pipelines":
			p.decode(v, "pipelines", &cfg.Pipelines)
		case "sources":
			p.components(v, "sources", cfg.Sources, func(typ string) (func() any, func(any) error, bool) {
				if sf, ok := f.source(typ); ok {
					return sf.NewConfig, sf.Validate, true
				}
				return nil, nil, false
			}, f.sourceTypes())
		case "sinks":
			p.components(v, "sinks", cfg.Sinks, func(typ string) (func() any, func(any) error, bool) {
				if sf, ok := f.sink(typ); ok {
					return sf.NewConfig, sf.Validate, true
				}
				return nil, nil, false
			}, f.sinkTypes())
		default:
			p.errorf(k.Line, k.Value, "unknown key (known: %s)", strings.Join(topKeys, ", "))
		}
	}
	p.defaults(cfg)
	p.pipelines(root, cfg, f)
	return cfg
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// env is ${VAR} or ${VAR:-default}.
var env = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${VAR} and ${VAR:-default} in every scalar value with
// the environment's; a variable that is not set and has no default is an
// error naming it.
func (p *parser) expand(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode {
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = env.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := env.FindStringSubmatch(m)
			if v, ok := os.LookupEnv(sub[1]); ok && v != "" {
				return v
			}
			if sub[2] != "" {
				return sub[3]
			}
			p.errorf(n.Line, "", "environment variable %s is not set (write ${%s:-default} for a default)", sub[1], sub[1])
			return ""
		})
		if n.Style == 0 {
			n.Tag = "" // plain: the decoder resolves the expanded value (a number, a bool)
		}
		return
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			continue // keys are not expanded
		}
		p.expand(c)
	}
}

// decode fills out from n strictly: every key must be a field of out (by
// its yaml tag), every value of the field's type.
func (p *parser) decode(n *yaml.Node, path string, out any) {
	before := len(p.errs)
	p.checkKeys(n, reflect.TypeOf(out), path)
	if len(p.errs) > before {
		return
	}
	if err := n.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				line := n.Line
				if m := yamlLine.FindStringSubmatch(e); m != nil {
					fmt.Sscan(m[1], &line)
				}
				p.errorf(line, path, "%s", yamlLine.ReplaceAllString(e, ""))
			}
			return
		}
		p.errorf(n.Line, path, "%v", err)
	}
}

// checkKeys reports every key of n that t has no field for, with the keys
// it has.
func (p *parser) checkKeys(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeOf(time.Time{}) {
			return
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.MappingNode {
			p.errorf(n.Line, path, "want a mapping")
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "-" || !f.IsExported() {
				continue
			}
			if tag == "" {
				tag = strings.ToLower(f.Name)
			}
			fields[tag] = f
			names = append(names, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				p.errorf(k.Line, path+"."+k.Value, "unknown key (known: %s)", strings.Join(names, ", "))
				continue
			}
			p.checkKeys(v, f.Type, path+"."+k.Value)
		}
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			p.errorf(n.Line, path, "want a list")
			return
		}
		for i, c := range n.Content {
			p.checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			p.checkKeys(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value)
		}
	}
}

// components decodes sources: or sinks:, a mapping of name to a mapping
// with a type and the type's keys.
func (p *parser) components(n *yaml.Node, section string, into map[string]*Component,
	lookup func(string) (func() any, func(any) error, bool), types []string) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, section, "want a mapping of names to components")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := section + "." + k.Value
		if !validName.MatchString(k.Value) {
			p.errorf(k.Line, path, "a name of letters, digits, - and _")
			continue
		}
		if v.Kind != yaml.MappingNode {
			p.errorf(v.Line, path, "want a mapping with a type")
			continue
		}
		var typ string
		rest := &yaml.Node{Kind: yaml.MappingNode, Line: v.Line, Column: v.Column}
		for j := 0; j+1 < len(v.Content); j += 2 {
			if v.Content[j].Value == "type" {
				typ = v.Content[j+1].Value
				continue
			}
			rest.Content = append(rest.Content, v.Content[j], v.Content[j+1])
		}
		if typ == "" {
			p.errorf(v.Line, path+".type", "required (one of: %s)", strings.Join(types, ", "))
			continue
		}
		if p.invalid == nil {
			p.invalid = map[string]bool{}
		}
		p.invalid[path] = true // until it decodes and validates
		newConfig, validate, ok := lookup(typ)
		if !ok {
			p.errorf(v.Line, path+".type", "%q: no such type in this distribution (it has: %s)", typ, strings.Join(types, ", "))
			continue
		}
		cfg := newConfig()
		before := len(p.errs)
		p.decode(rest, path, cfg)
		if len(p.errs) > before {
			continue
		}
		if err := validate(cfg); err != nil {
			for _, msg := range splitErr(err) {
				p.errorf(keyLine(v, msg), path, "%s", msg)
			}
			continue
		}
		key, _ := json.Marshal(cfg)
		delete(p.invalid, path)
		into[k.Value] = &Component{Name: k.Value, Type: typ, Config: cfg, key: typ + " " + string(key), line: k.Line}
	}
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// splitErr is each line of a validation error, without core's "invalid"
// marker.
func splitErr(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSuffix(strings.TrimSpace(line), ": "+core.ErrInvalid.Error())
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// keyLine is the line of the key a message starts with ("namespace: ..."),
// else the component's.
func keyLine(n *yaml.Node, msg string) int {
	key, _, _ := strings.Cut(msg, ":")
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == key || strings.HasPrefix(key, n.Content[j].Value+"[") {
			return n.Content[j].Line
		}
	}
	return n.Line
}

func (p *parser) defaults(cfg *Config) {
	if cfg.Log.Level == "" {
		cfg.Log.Level = "info"
	}
	if _, err := parseLevel(cfg.Log.Level); err != nil {
		p.errorf(1, "log.level", "%v", err)
	}
	if cfg.HTTP.Listen == "" {
		cfg.HTTP.Listen = "127.0.0.1:9102"
	}
	if cfg.Shutdown.Drain == 0 {
		cfg.Shutdown.Drain = 10 * time.Second
	}
	if cfg.Reload.Interval == 0 {
		cfg.Reload.Interval = time.Second
	}
	if cfg.Reload.Settle == 0 {
		cfg.Reload.Settle = 300 * time.Millisecond
	}
}

// pipelines checks every reference and target.
func (p *parser) pipelines(root *yaml.Node, cfg *Config, f Factories) {
	var seq *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "pipelines" {
			seq = root.Content[i+1]
		}
	}
	if len(cfg.Pipelines) == 0 {
		line := 1
		if seq != nil {
			line = seq.Line
		}
		p.errorf(line, "pipelines", "none: a pipeline names a source, its targets (none for an xDS sink) and sinks")
		return
	}
	field := func(i int, key string) *yaml.Node { // the node of pipelines[i].key, for its line
		if seq == nil || i >= len(seq.Content) {
			return &yaml.Node{Line: 1}
		}
		n := seq.Content[i]
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == key {
				return n.Content[j+1]
			}
		}
		return n
	}
	demandUse := map[string]int{} // demand-driven sink -> pipelines using it
	for i := range cfg.Pipelines {
		pl := &cfg.Pipelines[i]
		path := fmt.Sprintf("pipelines[%d]", i)
		src, ok := cfg.Sources[pl.Source]
		if !ok && !p.invalid["sources."+pl.Source] {
			p.errorf(field(i, "source").Line, path+".source", "%q: no such source (sources: %s)", pl.Source, strings.Join(names(cfg.Sources), ", "))
		}
		if len(pl.Sinks) == 0 {
			p.errorf(field(i, "sinks").Line, path+".sinks", "none: name at least one sink")
		}
		for j, s := range pl.Sinks {
			sink, ok := cfg.Sinks[s]
			line := field(i, "sinks").Line
			if n := field(i, "sinks"); n.Kind == yaml.SequenceNode && j < len(n.Content) {
				line = n.Content[j].Line
			}
			if !ok && p.invalid["sinks."+s] {
				continue // its own error says why
			}
			if !ok {
				p.errorf(line, fmt.Sprintf("%s.sinks[%d]", path, j), "%q: no such sink (sinks: %s)", s, strings.Join(names(cfg.Sinks), ", "))
				continue
			}
			sf, _ := f.sink(sink.Type)
			switch {
			case sf.DemandDriven() && len(pl.Targets) > 0:
				p.errorf(line, fmt.Sprintf("%s.sinks[%d]", path, j), "%s (%s) serves what its clients ask for: put it in a pipeline with no targets", s, sink.Type)
			case !sf.DemandDriven() && len(pl.Targets) == 0:
				p.errorf(line, fmt.Sprintf("%s.sinks[%d]", path, j), "%s (%s) needs targets: list them in this pipeline", s, sink.Type)
			case sf.DemandDriven():
				if demandUse[s]++; demandUse[s] > 1 {
					p.errorf(line, fmt.Sprintf("%s.sinks[%d]", path, j), "%s (%s) serves one source: it is in another pipeline already", s, sink.Type)
				}
			}
		}
		if !ok {
			continue
		}
		sf, _ := f.source(src.Type)
		tn := field(i, "targets")
		for j, text := range pl.Targets {
			line := tn.Line
			if tn.Kind == yaml.SequenceNode && j < len(tn.Content) {
				line = tn.Content[j].Line
			}
			t, err := sf.Target(src.Config, text)
			if err != nil {
				p.errorf(line, fmt.Sprintf("%s.targets[%d]", path, j), "%q: %s", text, strings.TrimSuffix(err.Error(), ": "+core.ErrInvalid.Error()))
				continue
			}
			pl.targets = append(pl.targets, t)
		}
	}
}

func names(m map[string]*Component) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}
