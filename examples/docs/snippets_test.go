// Package docs holds the test that keeps the documentation's Go honest:
// every ```go block of README.md and of every module's README compiles
// against the code as it is, so a renamed or changed API breaks the build
// of the docs, not the reader.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// imports are the packages a snippet may name, by the name it uses.
var imports = map[string]string{
	"core":         "github.com/disco-lb/disco/core",
	"coretest":     "github.com/disco-lb/disco/core/coretest",
	"wire":         "github.com/disco-lb/disco/core/wire",
	"route":        "github.com/disco-lb/disco/core/route",
	"kit":          "github.com/disco-lb/disco/core/kit",
	"plugin":       "github.com/disco-lb/disco/core/plugin",
	"agent":        "github.com/disco-lb/disco/core/agent",
	"grpcresolver": "github.com/disco-lb/disco/sinks/grpcresolver",
	"connpool":     "github.com/disco-lb/disco/sinks/connpool",
	"webhook":      "github.com/disco-lb/disco/sinks/webhook",
	"xds":          "github.com/disco-lb/disco/sinks/xds",
	"kubernetes":   "github.com/disco-lb/disco/sources/kubernetes",
	"dns":          "github.com/disco-lb/disco/sources/dns",
	"etcd":         "github.com/disco-lb/disco/sources/etcd",
	"file":         "github.com/disco-lb/disco/sources/file",
	"kubetest":     "github.com/disco-lb/disco/sources/kubernetes/kubetest",
	"podnet":       "github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet",
	"greeter":      "github.com/disco-lb/disco/examples/greeter",
	"grpc":         "google.golang.org/grpc",
	"credentials":  "google.golang.org/grpc/credentials",
	"insecure":     "google.golang.org/grpc/credentials/insecure",
	"keepalive":    "google.golang.org/grpc/keepalive",
	"prometheus":   "github.com/prometheus/client_golang/prometheus",
	"zap":          "go.uber.org/zap",
	"rest":         "k8s.io/client-go/rest",
	"rbacv1":       "k8s.io/api/rbac/v1",
	"context":      "context",
	"tls":          "crypto/tls",
	"http":         "net/http",
	"net":          "net",
	"os":           "os",
	"testing":      "testing",
	"time":         "time",
}

// given is what snippets take as known: the variables a reader has from
// the text around a snippet (credentials, a context, a hub, a target...)
// and the user's own types. A snippet that declares one of these names
// shadows it.
const given = `
var (
	creds, serverCreds credentials.TransportCredentials
	tlsConfig          *tls.Config
	ctx                context.Context
	cfg                *rest.Config
	ns, zone           string
	src                core.Source
	hub                *core.Hub
	target             core.Target
	targets            []core.Target
	logger, log        *zap.Logger
	metrics            core.Metrics
	registry           *prometheus.Registry
	b                  *grpcresolver.Builder
	sink               core.Sink
	t                  *testing.T
	rules              []rbacv1.PolicyRule
	regenerateConfig   func(core.Target, core.Set) error
)

// The user's own source, sink and conformance harnesses.
type (
	mySource      struct{ core.Source; log *zap.Logger }
	mySink        struct{ core.Sink }
	myHarness     struct{ coretest.SourceHarness }
	mySinkHarness struct{ coretest.SinkHarness }
)
`

// snippet is one ```go block: where it is and its lines.
type snippet struct {
	file string // absolute
	line int    // of its first line
	body []string
}

// readmes are the documents whose snippets must compile.
func readmes(t *testing.T, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "README.md" {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func snippets(t *testing.T, path string) []snippet {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []snippet
	var cur *snippet
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &snippet{file: path, line: n + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.body = append(cur.body, line)
		}
	}
	return out
}

var (
	ident    = regexp.MustCompile(`\b([a-z][a-zA-Z0-9]*)\.[A-Z]`)
	topLevel = regexp.MustCompile(`^(func|type|var|const) `)
)

// source turns a snippet into a Go file of package name: its import lines
// kept, the imports of the packages it names added, top-level
// declarations at file level and statements in a function, each with a
// //line directive so that errors name the README's own lines.
func source(name string, s snippet) string {
	need := map[string]bool{"context": true, "credentials": true, "tls": true, "rest": true, "core": true, "zap": true,
		"prometheus": true, "grpcresolver": true, "testing": true, "rbacv1": true, "coretest": true}
	var own []string
	var decls, stmts strings.Builder
	inDecl := false
	for i, line := range s.body {
		if strings.HasPrefix(line, "import ") {
			own = append(own, strings.TrimPrefix(line, "import "))
			continue
		}
		for _, m := range ident.FindAllStringSubmatch(line, -1) {
			if _, ok := imports[m[1]]; ok {
				need[m[1]] = true
			}
		}
		directive := fmt.Sprintf("//line %s:%d\n", s.file, s.line+i)
		switch {
		case topLevel.MatchString(line):
			inDecl = true
			decls.WriteString(directive + line + "\n")
		case inDecl && (strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "}") || line == ""):
			decls.WriteString(directive + line + "\n")
		default:
			inDecl = false
			stmts.WriteString(directive + line + "\n")
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "package %s\n\nimport (\n", name)
	for _, imp := range own {
		fmt.Fprintf(&b, "\t%s\n", strings.Split(imp, "//")[0])
	}
	for n := range need {
		fmt.Fprintf(&b, "\t%s %q\n", n, imports[n])
	}
	b.WriteString(")\n" + given + "\n" + decls.String())
	if stmts.Len() > 0 {
		b.WriteString("func _() {\n" + stmts.String() + "}\n")
	}
	return b.String()
}

// benign are the compiler's complaints a fragment earns by being a
// fragment: a variable it declares for the reader and does not use.
var benign = regexp.MustCompile(`declared and not used|imported and not used`)

func TestReadmeSnippetsCompile(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The files go in a directory of the examples module (whose go.mod
	// requires every module), named so that ./... never sees it.
	dir, err := os.MkdirTemp("..", "_snippets")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var pkgs []string
	count := 0
	for _, readme := range readmes(t, root) {
		for i, s := range snippets(t, readme) {
			rel, _ := filepath.Rel(root, readme)
			name := fmt.Sprintf("s%d", count)
			count++
			pkg := filepath.Join(dir, name)
			if err := os.MkdirAll(pkg, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pkg, "snippet.go"), []byte(source(name, s)), 0o644); err != nil {
				t.Fatal(err)
			}
			pkgs = append(pkgs, "./"+filepath.ToSlash(filepath.Join(filepath.Base(dir), name)))
			t.Logf("%s, snippet %d (line %d): %d lines", rel, i+1, s.line, len(s.body))
		}
	}
	if count < 20 {
		t.Fatalf("only %d Go snippets found: is the extraction broken?", count)
	}
	cmd := exec.Command("go", append([]string{"build", "-gcflags=-e"}, pkgs...)...)
	cmd.Dir = ".."
	out, _ := cmd.CombinedOutput()
	var errs []string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "# ") || benign.MatchString(line) {
			continue
		}
		errs = append(errs, strings.TrimPrefix(line, root+"/"))
	}
	if len(errs) > 0 {
		t.Fatalf("%d README snippets do not compile:\n%s", len(errs), strings.Join(errs, "\n"))
	}
	t.Logf("%d Go snippets in the READMEs compile", count)
}
