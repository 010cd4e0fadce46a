package shape

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every call in this package that lists the qdiscs or links of the whole
// host must count itself in hostDumps, or TestNoHostWideDumps cannot see it.
// A source check, so that it fails without root as well.
func TestDumpsAreCounted(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	counted := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			var dumps []string
			counts, dumpFlag, getQdiscOrLink := false, false, false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "countHostDump" {
						counts = true
					}
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
						x, _ := sel.X.(*ast.Ident)
						switch {
						case sel.Sel.Name == "QdiscList" || sel.Sel.Name == "LinkList":
							dumps = append(dumps, sel.Sel.Name)
						case x != nil && x.Name == "link" && (sel.Sel.Name == "List" || sel.Sel.Name == "Ports"):
							dumps = append(dumps, "link."+sel.Sel.Name)
						}
					}
				case *ast.SelectorExpr:
					switch n.Sel.Name {
					case "NLM_F_DUMP":
						dumpFlag = true
					case "RTM_GETQDISC", "RTM_GETLINK":
						getQdiscOrLink = true
					}
				}
				return true
			})
			if dumpFlag && getQdiscOrLink {
				dumps = append(dumps, "an RTM_GETQDISC/RTM_GETLINK dump")
			}
			if len(dumps) == 0 {
				continue
			}
			if !counts {
				t.Errorf("%s: %s calls %s, a host-wide dump, without countHostDump()", fset.Position(fn.Pos()), fn.Name.Name, strings.Join(dumps, ", "))
			} else {
				counted++
			}
		}
	}
	if counted == 0 {
		t.Errorf("found no counted dump at all (allAggregateIfbs lists links): the source check is broken")
	}
}
