package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	sectionRef = regexp.MustCompile(`top README, "([^"]+)"`)
)

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ' || r == '-':
			b.WriteRune('-')
		case r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(data), -1) {
		out[slug(strings.ReplaceAll(m[1], "`", ""))] = true
	}
	return out
}

// Every relative link of the READMEs leads to a file that exists (and to
// a heading of it, for a #fragment), and every "top README, "<section>""
// names a section the top README has.
func TestReadmeLinksAndSectionsExist(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	top := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range heading.FindAllStringSubmatch(string(data), -1) {
		top[strings.TrimSpace(m[1])] = true
	}
	checked := 0
	for _, readme := range readmes(t, root) {
		text, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, readme)
		for _, m := range mdLink.FindAllStringSubmatch(string(text), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(link, "#")
			target := readme
			if path != "" {
				target = filepath.Join(filepath.Dir(readme), path)
			}
			info, err := os.Stat(target)
			if err != nil {
				t.Errorf("%s: link %q: %v", rel, link, err)
				continue
			}
			checked++
			if frag != "" && !info.IsDir() && !anchors(t, target)[frag] {
				t.Errorf("%s: link %q: no heading #%s there", rel, link, frag)
			}
		}
		flat := strings.Join(strings.Fields(string(text)), " ")
		for _, m := range sectionRef.FindAllStringSubmatch(flat, -1) {
			checked++
			if !top[m[1]] {
				t.Errorf("%s: names the top README's section %q, which does not exist", rel, m[1])
			}
		}
	}
	t.Logf("%d links and section references checked", checked)
}
