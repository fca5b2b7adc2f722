// Package archtest checks the layering of the module: which packages may import which, and
// where raw system calls may be made.
package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ztunnel-go/ztunnel"

// leaves are the packages (with their subpackages) that the composition root, ztunnel/, joins:
// none of them imports another (README "Architecture").
var leaves = []string{"hbone", "relay", "workload", "certs", "redirect"}

// kernelPackages may make raw system calls: redirect/ (everything that touches the kernel's
// redirection) and relay/ (moving bytes between sockets).
var kernelPackages = []string{"redirect", "relay"}

// allowedSyscallNames are the identifiers of package syscall other packages may use: error
// numbers and signals to compare with, open(2) flags for os.OpenFile, and the stat structure of a
// file's FileInfo.
var allowedSyscallNames = regexp.MustCompile(`^(E[A-Z0-9]+|SIG[A-Z0-9]+|O_[A-Z0-9]+|Signal|Errno|Stat_t)$`)

// pkg is one package of the module, from its non-test files.
type pkg struct {
	dir     string // relative to the module root, "/"-separated
	imports map[string][]string
	files   []*ast.File
	names   []string // file names, parallel to files
	fset    *token.FileSet
}

func loadModule(t *testing.T) map[string]*pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "out") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		p := pkgs[rel]
		if p == nil {
			p = &pkg{dir: rel, imports: map[string][]string{}, fset: fset}
			pkgs[rel] = p
		}
		p.files = append(p.files, f)
		p.names = append(p.names, filepath.Base(path))
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			p.imports[ip] = append(p.imports[ip], filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// leafOf returns the leaf a package directory belongs to, or "".
func leafOf(dir string, set []string) string {
	for _, l := range set {
		if dir == l || strings.HasPrefix(dir, l+"/") {
			return l
		}
	}
	return ""
}

// TestLeavesDoNotImportEachOther: hbone, relay, workload, certs and redirect never import one
// another, so reading ztunnel/ is reading how they are joined.
func TestLeavesDoNotImportEachOther(t *testing.T) {
	for dir, p := range loadModule(t) {
		from := leafOf(dir, leaves)
		if from == "" {
			continue
		}
		for ip, files := range p.imports {
			rel, ok := strings.CutPrefix(ip, module+"/")
			if !ok {
				continue
			}
			if to := leafOf(rel, leaves); to != "" && to != from {
				t.Errorf("%s imports %s (%s): leaves must not import each other", dir, rel, strings.Join(files, ", "))
			}
		}
	}
}

// proxyPackages returns the module's packages linked into cmd/ztunnel.
func proxyPackages(pkgs map[string]*pkg) map[string]bool {
	seen := map[string]bool{}
	var visit func(dir string)
	visit = func(dir string) {
		if seen[dir] || pkgs[dir] == nil {
			return
		}
		seen[dir] = true
		for ip := range pkgs[dir].imports {
			if rel, ok := strings.CutPrefix(ip, module+"/"); ok {
				visit(rel)
			}
		}
	}
	visit("cmd/ztunnel")
	return seen
}

// TestRawSyscallsOnlyInKernelPackages: of the packages in the proxy binary, only redirect/ and
// relay/ import golang.org/x/sys/unix or unsafe, call into package syscall (beyond comparing
// error numbers and signals) or reach a socket's descriptor (SyscallConn).
func TestRawSyscallsOnlyInKernelPackages(t *testing.T) {
	pkgs := loadModule(t)
	proxy := proxyPackages(pkgs)
	if !proxy["ztunnel"] || !proxy["relay"] {
		t.Fatalf("cmd/ztunnel's packages not found (got %v)", keys(proxy))
	}
	for dir := range proxy {
		if leafOf(dir, kernelPackages) != "" {
			continue
		}
		p := pkgs[dir]
		for _, banned := range []string{"golang.org/x/sys/unix", "unsafe"} {
			if files := p.imports[banned]; len(files) > 0 {
				t.Errorf("%s imports %s (%s): raw system calls belong in redirect/ or relay/", dir, banned, strings.Join(files, ", "))
			}
		}
		for i, f := range p.files {
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pos := p.fset.Position(sel.Pos())
				where := p.dir + "/" + p.names[i] + ":" + strconv.Itoa(pos.Line)
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "syscall" && !allowedSyscallNames.MatchString(sel.Sel.Name) {
					t.Errorf("%s uses syscall.%s: raw system calls belong in redirect/ or relay/", where, sel.Sel.Name)
				}
				if sel.Sel.Name == "SyscallConn" {
					t.Errorf("%s calls SyscallConn: raw socket access belongs in redirect/ or relay/", where)
				}
				return true
			})
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
