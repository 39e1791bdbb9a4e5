// Command modcheck keeps disco's Go modules consistent, the way multi-module
// repositories release: every module is tagged <dir>/vX.Y.Z at one version,
// requires its siblings at that version (with a replace directive to the
// sibling's directory, for building inside the repository; consumers ignore
// replace directives), and every shared dependency is at one version in
// every module.
//
//	modcheck check      every rule below; exits 1 naming each violation
//	modcheck align      raise each shared requirement to its highest version everywhere
//	modcheck version V  require every sibling at V
//	modcheck tags       print the git tags of the current version (-create makes them)
//	modcheck api APIDIFF BASE  every incompatible change of a product module's API since the
//	                    release whose tree is at BASE (apidiff, export data of both) must be
//	                    listed in core/CHANGELOG.md, in the section of the current version
//
// The rules of check:
//
//   - every module requires its siblings at the one version, and replaces
//     each with the sibling's directory; go.work uses every module;
//   - every dependency is at one version in every module that requires it;
//   - k8s.io/api, apimachinery and client-go are v0.M.* where the tests'
//     Kubernetes (.ci/k8s/kube/go.mod, k8s.io/kubernetes v1.M.*) is of minor M;
//   - a product module (not examples, not a test harness) requires directly
//     nothing that only its tests use, except go.uber.org/goleak (every
//     test's leak check; a consumer's build never loads its dependencies).
//
// Run it from the repository root with the Go toolchain on $PATH.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

const repoPath = "github.com/disco-lb/disco"

// testModules are modules that are not products: nobody imports them to
// build a program, so test-only requirements are fine there.
var testModules = []string{"examples", "sources/kubernetes/kubetest"}

// testOnlyAllowed may be required by a product module for its tests.
var testOnlyAllowed = []string{"go.uber.org/goleak"}

type module struct {
	dir      string // relative to the repository root, "." never (no root module)
	path     string
	requires map[string]string // path -> version
	direct   map[string]bool   // requirements not marked // indirect
	replaces map[string]string // path -> replacement (path or dir)
}

func main() {
	create := flag.Bool("create", false, "tags: create the tags (default: print the commands)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: modcheck check | align | version vX.Y.Z | tags [-create] | api APIDIFF BASE")
	}
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	mods, err := loadModules(".")
	if err != nil {
		fail(err)
	}
	switch args[0] {
	case "check":
		problems := check(mods)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "modcheck:", p)
		}
		if len(problems) > 0 {
			os.Exit(1)
		}
		v, _ := version(mods)
		fmt.Printf("modcheck: %d modules consistent at %s\n", len(mods), v)
	case "align":
		err = align(mods)
	case "version":
		if len(args) != 2 || !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(args[1]) {
			fail(errors.New("version needs vX.Y.Z"))
		}
		err = setVersion(mods, args[1])
	case "tags":
		err = tags(mods, *create)
	case "api":
		if len(args) != 3 {
			fail(errors.New("api needs the apidiff binary and the base tree"))
		}
		err = apiCheck(mods, args[1], args[2])
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "modcheck:", err)
	os.Exit(1)
}

// loadModules finds every go.mod below root, outside .ci and .git.
func loadModules(root string) ([]*module, error) {
	var mods []*module
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".ci" || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.Name() != "go.mod" || d.IsDir() {
			return nil
		}
		m, err := readModule(filepath.Dir(p))
		if err != nil {
			return err
		}
		mods = append(mods, m)
		return nil
	})
	sort.Slice(mods, func(i, j int) bool { return mods[i].dir < mods[j].dir })
	return mods, err
}

// readModule reads a go.mod through `go mod edit -json` (no parser to keep
// in step with the go command).
func readModule(dir string) (*module, error) {
	out, err := run(dir, "go", "mod", "edit", "-json")
	if err != nil {
		return nil, err
	}
	var gm struct {
		Module  struct{ Path string }
		Require []struct {
			Path, Version string
			Indirect      bool
		}
		Replace []struct {
			Old struct{ Path string }
			New struct{ Path, Version string }
		}
	}
	if err := json.Unmarshal(out, &gm); err != nil {
		return nil, fmt.Errorf("%s/go.mod: %w", dir, err)
	}
	m := &module{dir: filepath.ToSlash(filepath.Clean(dir)), path: gm.Module.Path,
		requires: map[string]string{}, direct: map[string]bool{}, replaces: map[string]string{}}
	for _, r := range gm.Require {
		m.requires[r.Path] = r.Version
		m.direct[r.Path] = !r.Indirect
	}
	for _, r := range gm.Replace {
		m.replaces[r.Old.Path] = r.New.Path
	}
	return m, nil
}

func run(dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %v: %s", dir, name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func isTestModule(m *module) bool {
	for _, t := range testModules {
		if m.dir == t || strings.HasPrefix(m.dir, t+"/") {
			return true
		}
	}
	return false
}

// version returns the one version siblings are required at.
func version(mods []*module) (string, error) {
	seen := map[string][]string{}
	for _, m := range mods {
		for p, v := range m.requires {
			if strings.HasPrefix(p, repoPath+"/") {
				seen[v] = append(seen[v], m.dir+" requires "+p)
			}
		}
	}
	if len(seen) != 1 {
		var vs []string
		for v, who := range seen {
			vs = append(vs, fmt.Sprintf("%s (%s)", v, strings.Join(who, ", ")))
		}
		sort.Strings(vs)
		return "", fmt.Errorf("siblings are required at %d versions: %s", len(seen), strings.Join(vs, "; "))
	}
	for v := range seen {
		return v, nil
	}
	return "", nil
}

func check(mods []*module) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	byPath := map[string]*module{}
	for _, m := range mods {
		byPath[m.path] = m
		if want := repoPath + "/" + m.dir; m.path != want {
			add("%s/go.mod: module %s, want %s", m.dir, m.path, want)
		}
	}
	v, err := version(mods)
	if err != nil {
		add("%v", err)
	}
	if v != "" && !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(v) {
		add("siblings are required at %s, not a release version vX.Y.Z", v)
	}
	// Replace directives point at the siblings' directories.
	for _, m := range mods {
		for p := range m.requires {
			sib := byPath[p]
			if !strings.HasPrefix(p, repoPath+"/") {
				continue
			}
			if sib == nil {
				add("%s requires %s, which is not a module of this repository", m.dir, p)
				continue
			}
			rel, _ := filepath.Rel(m.dir, sib.dir)
			want := filepath.ToSlash(rel)
			if !strings.HasPrefix(want, ".") {
				want = "./" + want
			}
			if got := m.replaces[p]; got != want {
				add("%s/go.mod: replace %s => %q, want => %s", m.dir, p, got, want)
			}
		}
		for p, r := range m.replaces {
			if !strings.HasPrefix(p, repoPath+"/") {
				add("%s/go.mod: replaces %s => %s: only siblings may be replaced", m.dir, p, r)
			} else if _, ok := m.requires[p]; !ok {
				add("%s/go.mod: replaces %s, which it does not require", m.dir, p)
			}
		}
	}
	// go.work uses every module.
	if work, err := os.ReadFile("go.work"); err != nil {
		add("go.work: %v", err)
	} else {
		for _, m := range mods {
			if !regexp.MustCompile(`(?m)^\s*\./` + regexp.QuoteMeta(m.dir) + `\s*$`).Match(work) {
				add("go.work does not use ./%s", m.dir)
			}
		}
	}
	// One version of each dependency.
	versions := map[string]map[string][]string{}
	for _, m := range mods {
		for p, ver := range m.requires {
			if strings.HasPrefix(p, repoPath+"/") {
				continue
			}
			if versions[p] == nil {
				versions[p] = map[string][]string{}
			}
			versions[p][ver] = append(versions[p][ver], m.dir)
		}
	}
	for _, p := range sortedKeys(versions) {
		if len(versions[p]) > 1 {
			var vs []string
			for _, ver := range sortedKeys(versions[p]) {
				vs = append(vs, fmt.Sprintf("%s in %s", ver, strings.Join(versions[p][ver], ", ")))
			}
			add("%s at %d versions: %s (run make deps-align)", p, len(versions[p]), strings.Join(vs, "; "))
		}
	}
	// Kubernetes: client libraries of the tested minor.
	if kube, err := readModule(".ci/k8s/kube"); err != nil {
		add("%v", err)
	} else if kv := kube.requires["k8s.io/kubernetes"]; kv == "" {
		add(".ci/k8s/kube/go.mod does not pin k8s.io/kubernetes")
	} else {
		minor := strings.Split(kv, ".")[1]
		for _, p := range []string{"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go"} {
			for ver, who := range versions[p] {
				if parts := strings.Split(ver, "."); len(parts) < 2 || parts[1] != minor {
					add("%s %s in %s: the tests run Kubernetes %s (.ci/k8s/kube/go.mod); use v0.%s.*", p, ver, strings.Join(who, ", "), kv, minor)
				}
			}
		}
	}
	// Product modules require nothing only their tests use.
	for _, m := range mods {
		if isTestModule(m) {
			continue
		}
		build, err := usedModules(m.dir, false)
		if err != nil {
			add("%v", err)
			continue
		}
		withTests, err := usedModules(m.dir, true)
		if err != nil {
			add("%v", err)
			continue
		}
		for p := range m.requires {
			// Direct requirements: an indirect one is there for the module
			// graph of a direct one, and goes with it.
			if m.direct[p] && withTests[p] && !build[p] && !slices.Contains(testOnlyAllowed, p) {
				add("%s (a product module) requires %s, which only its tests use: move those tests to a test module (see README, Modules)", m.dir, p)
			}
		}
	}
	return problems
}

// usedModules returns the modules whose packages the module's packages
// import, transitively, with or without their tests.
func usedModules(dir string, tests bool) (map[string]bool, error) {
	args := []string{"list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}"}
	if tests {
		args = append(args, "-test")
	}
	out, err := run(dir, "go", append(args, "./...")...)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			used[l] = true
		}
	}
	return used, nil
}

// align raises every shared requirement to its highest version in every
// module that requires it.
func align(mods []*module) error {
	best := map[string]string{}
	for _, m := range mods {
		for p, v := range m.requires {
			if strings.HasPrefix(p, repoPath+"/") {
				continue
			}
			if b, ok := best[p]; !ok || semverLess(b, v) {
				best[p] = v
			}
		}
	}
	for _, m := range mods {
		var args []string
		for p, v := range m.requires {
			if b := best[p]; b != "" && b != v {
				args = append(args, "-require="+p+"@"+b)
			}
		}
		if len(args) == 0 {
			continue
		}
		sort.Strings(args)
		fmt.Printf("modcheck: %s: %s\n", m.dir, strings.Join(args, " "))
		if _, err := run(m.dir, "go", append([]string{"mod", "edit"}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// setVersion requires every sibling at v, with its replace directive.
func setVersion(mods []*module, v string) error {
	for _, m := range mods {
		var args []string
		for p := range m.requires {
			if strings.HasPrefix(p, repoPath+"/") {
				args = append(args, "-require="+p+"@"+v)
			}
		}
		if len(args) == 0 {
			continue
		}
		if _, err := run(m.dir, "go", append([]string{"mod", "edit"}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

func tags(mods []*module, create bool) error {
	if problems := check(mods); len(problems) > 0 {
		return fmt.Errorf("not tagging: %s", strings.Join(problems, "; "))
	}
	v, err := version(mods)
	if err != nil {
		return err
	}
	for _, m := range mods {
		tag := m.dir + "/" + v
		if !create {
			fmt.Printf("git tag %s\n", tag)
			continue
		}
		if _, err := run(".", "git", "tag", tag); err != nil {
			return err
		}
		fmt.Printf("modcheck: tagged %s\n", tag)
	}
	if !create {
		fmt.Printf("# then: git push origin %s\n", strings.Join(func() []string {
			var ts []string
			for _, m := range mods {
				ts = append(ts, m.dir+"/"+v)
			}
			return ts
		}(), " "))
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// semverLess compares two module versions (vMAJOR.MINOR.PATCH[-pre]).
func semverLess(a, b string) bool {
	pa, pb := parseVersion(a), parseVersion(b)
	for i := range 3 {
		if pa.n[i] != pb.n[i] {
			return pa.n[i] < pb.n[i]
		}
	}
	switch {
	case pa.pre == pb.pre:
		return false
	case pa.pre == "":
		return false
	case pb.pre == "":
		return true
	}
	return pa.pre < pb.pre // pseudo-versions compare by timestamp
}

type parsedVersion struct {
	n   [3]int
	pre string
}

func parseVersion(v string) parsedVersion {
	var p parsedVersion
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "+")
	core, pre, _ := strings.Cut(v, "-")
	p.pre = pre
	for i, s := range strings.SplitN(core, ".", 3) {
		fmt.Sscan(s, &p.n[i])
	}
	return p
}
