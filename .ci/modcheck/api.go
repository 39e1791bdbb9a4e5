package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// changelog is the project's changelog: one "## vX.Y.Z" section per
// release, newest first, with a "### <module path>" subsection per module
// that changed.
const changelog = "core/CHANGELOG.md"

// apiCheck compares the API of every product module with the release whose
// tree is at base, and fails for each incompatible change the changelog's
// current section does not list under its module: each is named there in
// backquotes, as apidiff names it without pointers and parentheses
// (`Hub.Pipeline`, `coretest.Recorder.Update`).
func apiCheck(mods []*module, apidiff, base string) error {
	v, err := version(mods)
	if err != nil {
		return err
	}
	sections, err := readChangelog(changelog, v)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "modcheck-api-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var problems []string
	compared := 0
	for _, m := range mods {
		if isTestModule(m) {
			continue
		}
		old := filepath.Join(base, m.dir)
		if _, err := os.Stat(filepath.Join(old, "go.mod")); err != nil {
			fmt.Printf("modcheck: %s is new since the last release: nothing to compare\n", m.path)
			continue
		}
		oldExp, newExp := filepath.Join(tmp, "old.export"), filepath.Join(tmp, "new.export")
		if out, err := run(old, apidiff, "-m", "-w", oldExp, m.path); err != nil {
			return fmt.Errorf("export data of %s at the last release: %v\n%s", m.path, err, out)
		}
		if out, err := run(m.dir, apidiff, "-m", "-w", newExp, m.path); err != nil {
			return fmt.Errorf("export data of %s: %v\n%s", m.path, err, out)
		}
		out, err := run(".", apidiff, "-m", "-incompatible", oldExp, newExp)
		if err != nil {
			return fmt.Errorf("apidiff %s: %v\n%s", m.path, err, out)
		}
		compared++
		listed := sections[m.path]
		for _, key := range incompatible(string(out)) {
			if !strings.Contains(listed, "`"+key+"`") {
				problems = append(problems, fmt.Sprintf("%s: incompatible change of `%s` not listed in %s under ## %s, ### %s", m.path, key, changelog, v, m.path))
			}
		}
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "modcheck:", p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d incompatible API changes not in the changelog", len(problems))
	}
	fmt.Printf("modcheck: the API of %d modules compared with the last release; every incompatible change is in %s\n", compared, changelog)
	return nil
}

var (
	apidiffLine = regexp.MustCompile(`^- (.+?): `)
	typeArgs    = regexp.MustCompile(`\[[^\]]*\]`)
)

// incompatible returns the names of the changes apidiff lists, in the form
// the changelog uses: "./coretest.(*Recorder).Update" is
// "coretest.Recorder.Update".
func incompatible(out string) []string {
	var keys []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := apidiffLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		k := strings.TrimPrefix(m[1], "./")
		k = strings.NewReplacer("(*", "", "(", "", ")", "").Replace(k)
		k = typeArgs.ReplaceAllString(k, "") // Pool[C].Update is Pool.Update
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// readChangelog returns, per module path, the text of its subsection in
// the section of version v.
func readChangelog(path, v string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	in, mod := false, ""
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(strings.TrimPrefix(line, "## "), v)
			mod = ""
		case in && strings.HasPrefix(line, "### "):
			mod = strings.Trim(strings.TrimPrefix(line, "### "), "` ")
		case in && mod != "":
			out[mod] += line + "\n"
		}
	}
	if len(out) == 0 {
		return out, errors.New(path + ": no section ## " + v + " with ### <module path> subsections")
	}
	return out, nil
}
