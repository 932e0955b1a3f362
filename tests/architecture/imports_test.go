// Package architecture checks the rules of docs/architecture.md on the import graph, so that the
// folders keep saying what may depend on what.
package architecture

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tagpipe/tagpipe/"

type pkg struct {
	ImportPath string
	Imports    []string // of the package's non-test files
}

func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	for d := json.NewDecoder(strings.NewReader(string(out))); ; {
		var p pkg
		if err := d.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// plugin returns "inputs/modbus" for a package of that plugin ("" for none): a plugin is a
// folder of inputs/, processors/ or outputs/ other than all/ and internal/.
func plugin(path string) string {
	parts := strings.Split(path, "/")
	if len(parts) < 2 || (parts[0] != "inputs" && parts[0] != "processors" && parts[0] != "outputs") {
		return ""
	}
	if parts[1] == "all" || parts[1] == "internal" {
		return ""
	}
	return parts[0] + "/" + parts[1]
}

func TestImportRules(t *testing.T) {
	for _, p := range packages(t) {
		self := strings.TrimPrefix(p.ImportPath, module)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				if self == "models" && strings.Contains(strings.Split(imp, "/")[0], ".") {
					t.Errorf("models imports %s: models imports only the standard library", imp)
				}
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			top := strings.Split(dep, "/")[0]
			switch {
			case self == "models":
				t.Errorf("models imports %s: models imports only the standard library", dep)
			case strings.HasPrefix(self, "internal/") && !strings.HasPrefix(self, "internal/testkit/") &&
				(top == "agent" || top == "cmd" || top == "inputs" || top == "outputs" || top == "processors"):
				t.Errorf("%s imports %s: a library under internal/ imports no wiring and no plugin", self, dep)
			case self == "cluster" && (top == "agent" || top == "cmd" || top == "inputs" || top == "outputs" || top == "processors" || top == "web"):
				t.Errorf("cluster imports %s: the group membership imports models, config and internal/ only", dep)
			case self == "web" && (top == "agent" || top == "config" || top == "cmd" || plugin(dep) != ""):
				t.Errorf("web imports %s: the device page reads a web.Source; it imports no wiring and no plugin", dep)
			case plugin(self) != "" && plugin(dep) != "" && plugin(self) != plugin(dep):
				t.Errorf("%s imports %s: plugins never import one another", self, dep)
			}
		}
	}
}
