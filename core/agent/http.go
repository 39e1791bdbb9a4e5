package agent

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/disco-lb/disco/core"
)

// TargetStatus is one watched target as the status page and /api/targets
// show it.
type TargetStatus struct {
	Source    string           `json:"source"`
	Target    string           `json:"target"`
	Synced    bool             `json:"synced"`
	Stale     *StaleStatus     `json:"stale,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints"`
	Sinks     []sinkStatus     `json:"sinks"`
}

// StaleStatus is why a target is stale, and since when.
type StaleStatus struct {
	Since  time.Time `json:"since"`
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
}

// EndpointStatus is one endpoint of a target.
type EndpointStatus struct {
	Name        string   `json:"name"`
	Addresses   []string `json:"addresses"`
	Port        uint16   `json:"port"`
	Zone        string   `json:"zone,omitempty"`
	Node        string   `json:"node,omitempty"`
	Ready       bool     `json:"ready"`
	Serving     bool     `json:"serving"`
	Terminating bool     `json:"terminating"`
	Weight      uint32   `json:"weight,omitempty"`
}

// Targets returns every target the agent watches, by source.
func (a *Agent) Targets() []TargetStatus {
	a.mu.Lock()
	runs := make([]*sourceRun, 0, len(a.sources))
	for _, s := range a.sources {
		runs = append(runs, s)
	}
	a.mu.Unlock()
	sort.Slice(runs, func(i, j int) bool { return runs[i].c.Name < runs[j].c.Name })
	var out []TargetStatus
	for _, run := range runs {
		for _, t := range run.hub.Targets() {
			st, _ := run.hub.State(t)
			ts := TargetStatus{Source: run.c.Name, Target: t.String(), Synced: st.Synced, Endpoints: []EndpointStatus{}, Sinks: run.track.sinks(t)}
			sort.Slice(ts.Sinks, func(i, j int) bool { return ts.Sinks[i].Name < ts.Sinks[j].Name })
			if st.Stale.IsStale() {
				ts.Stale = &StaleStatus{Since: st.Stale.Since, Kind: string(st.Stale.Kind), Reason: st.Stale.Reason}
			}
			for e := range st.Endpoints.All() {
				c := e.Conditions
				ts.Endpoints = append(ts.Endpoints, EndpointStatus{Name: e.Name, Addresses: e.Addresses, Port: e.Port, Zone: e.Zone, Node: e.Node,
					Ready: c.IsReady(), Serving: c.IsServing(), Terminating: c.IsTerminating(), Weight: e.Weight})
			}
			out = append(out, ts)
		}
	}
	return out
}

// Ready reports whether every listed target of every pipeline has synced
// (or is stale with a reason: its source said why) and every component
// runs; when not, what is missing.
func (a *Agent) Ready() (bool, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var missing []string
	for _, pl := range a.cfg.Pipelines {
		src := a.sources[pl.Source]
		if src == nil {
			missing = append(missing, "source "+pl.Source+" is not running")
			continue
		}
		for _, s := range pl.Sinks {
			if a.sinks[s] == nil {
				missing = append(missing, "sink "+s+" is not running")
			}
		}
		for _, t := range pl.targets {
			if tp, ok := src.src.(interface {
				Target(string) (core.Target, error)
			}); ok {
				if t2, err := tp.Target(t.String()); err == nil {
					t = t2
				}
			}
			st, ok := src.hub.State(t)
			if !ok || (!st.Synced && !st.Stale.IsStale()) {
				missing = append(missing, fmt.Sprintf("%s %s has not synced", pl.Source, t))
			}
		}
	}
	return len(missing) == 0, missing
}

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"join": strings.Join,
	"ago":  func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"lag": func(s float64) string {
		if s == 0 {
			return "up to date"
		}
		return fmt.Sprintf("%.1fs behind", s)
	},
}).Parse(statusHTML))

type statusData struct {
	Config    string
	Loaded    time.Time
	ReloadErr string
	Ready     bool
	Missing   []string
	Targets   []TargetStatus
	Now       time.Time
}

// Handler serves /livez, /readyz, /metrics, the status page at /, its JSON
// twin at /api/targets, and (if the config enables it) POST /-/reload.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, missing := a.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:\n"+strings.Join(missing, "\n"))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		promhttp.HandlerFor(a.gatherers(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /api/targets", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Targets())
	})
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		enabled := a.cfg.HTTP.EnableLifecycle
		a.mu.Unlock()
		if !enabled {
			http.Error(w, "the lifecycle API is not enabled (http.enable_lifecycle: true)", http.StatusForbidden)
			return
		}
		res := a.Reload(true)
		w.Header().Set("Content-Type", "application/json")
		if res.Error != "" {
			w.WriteHeader(http.StatusBadRequest)
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		d := statusData{Config: a.path, Loaded: a.lastAt, Now: time.Now()}
		if a.lastErr != nil {
			d.ReloadErr = a.lastErr.Error()
		}
		a.mu.Unlock()
		d.Ready, d.Missing = a.Ready()
		d.Targets = a.Targets()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, d); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}
