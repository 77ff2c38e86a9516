// Package opkittest checks the identity of Gorgonia ops built on opkit.Base for the tests of
// packages op and ep: that an op's String names every parameter, and that its WriteHash and
// Hashcode follow its String, so that two ops that differ in any one parameter hash
// differently (Gorgonia merges nodes of equal op hash and equal inputs).
package opkittest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"hash/fnv"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// stateTypes are field types that hold an op's run state, not a parameter: they are left as
// they are.
var stateTypes = map[reflect.Type]bool{
	reflect.TypeOf(atomic.Int64{}):  true,
	reflect.TypeOf(atomic.Int32{}):  true,
	reflect.TypeOf(atomic.Uint64{}): true,
}

// dtypes are the values a tensor.Dtype parameter is changed to (the first that differs).
var dtypes = []tensor.Dtype{tensor.Float64, tensor.Float32, tensor.Int32}

// Variants returns op followed by one op per parameter, each made from op by changing that one
// parameter: every field of op's struct (and, recursively, of a struct field), except embedded
// opkit.Base and run state such as an atomic counter. Integers gain 1, booleans flip, floats
// become 2x+1, a tensor.Dtype becomes another, and an interface field takes the first value of
// others that is assignable to it and differs from the field. A field of another kind is an
// error, as is an interface field that no value of others fits: a parameter the test cannot
// vary would go unchecked.
func Variants(op G.Op, others ...any) ([]G.Op, error) {
	v := reflect.ValueOf(op)
	isPtr := v.Kind() == reflect.Pointer
	if isPtr {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%T is not a struct or a pointer to one", op)
	}
	if !isPtr { // an addressable copy, whose fields settable can reach
		a := reflect.New(v.Type()).Elem()
		a.Set(v)
		v = a
	}
	// fresh returns a settable copy of op's struct (run state left zero).
	fresh := func() reflect.Value {
		p := reflect.New(v.Type())
		for i := 0; i < v.NumField(); i++ {
			if !stateTypes[v.Type().Field(i).Type] {
				settable(p.Elem().Field(i)).Set(settable(v.Field(i)))
			}
		}
		return p.Elem()
	}
	// asOp is the op that s (from fresh) is.
	asOp := func(s reflect.Value) G.Op {
		if isPtr {
			return s.Addr().Interface().(G.Op)
		}
		return s.Interface().(G.Op)
	}
	out := []G.Op{op}
	var walk func(path []int, t reflect.Type, name string) error
	walk = func(path []int, t reflect.Type, name string) error {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			p := append(append([]int{}, path...), i)
			fname := name + "." + f.Name
			switch {
			case stateTypes[f.Type]:
				continue
			case f.Anonymous && f.Type.Name() == "Base" && f.Type.PkgPath() == "github.com/gomoe/gomoe/internal/opkit":
				continue
			case f.Type == reflect.TypeOf(tensor.Dtype{}):
			case f.Type.Kind() == reflect.Struct:
				if err := walk(p, f.Type, fname); err != nil {
					return err
				}
				continue
			}
			s := fresh()
			if err := change(settable(s.FieldByIndex(p)), others); err != nil {
				return fmt.Errorf("%T field %s: %w", op, fname, err)
			}
			out = append(out, asOp(s))
		}
		return nil
	}
	if err := walk(nil, v.Type(), fmt.Sprintf("%T", op)); err != nil {
		return nil, err
	}
	return out, nil
}

// settable is f made settable even where it is an unexported field.
func settable(f reflect.Value) reflect.Value {
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
}

// change changes f's value (see Variants).
func change(f reflect.Value, others []any) error {
	if f.Type() == reflect.TypeOf(tensor.Dtype{}) {
		for _, dt := range dtypes {
			if dt != f.Interface().(tensor.Dtype) {
				f.Set(reflect.ValueOf(dt))
				return nil
			}
		}
	}
	switch f.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f.SetInt(f.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f.SetUint(f.Uint() + 1)
	case reflect.Bool:
		f.SetBool(!f.Bool())
	case reflect.Float32, reflect.Float64:
		f.SetFloat(2*f.Float() + 1)
	case reflect.String:
		f.SetString(f.String() + "'")
	case reflect.Interface:
		for _, o := range others {
			ov := reflect.ValueOf(o)
			if ov.IsValid() && ov.Type().AssignableTo(f.Type()) && (f.IsNil() || !ov.Equal(f.Elem())) {
				f.Set(ov)
				return nil
			}
		}
		return fmt.Errorf("no other value of %v to set", f.Type())
	default:
		return fmt.Errorf("cannot change a %v", f.Type())
	}
	return nil
}

// CheckIdentity checks, for every op of ops, that the op and its variants (see Variants) have
// Strings of their own, that no two ops of different types share a String, that no two
// different Strings share a Hashcode, and that an op's WriteHash writes its String and its
// Hashcode is the FNV-1a hash of that. (Variants of two ops of ops may coincide: pwOp{k: 0}
// with k changed is pwOp{k: 1}.)
func CheckIdentity(t testing.TB, ops []G.Op, others ...any) {
	t.Helper()
	types := map[string]reflect.Type{}
	hashes := map[uint32]string{}
	for _, op := range ops {
		vs, err := Variants(op, others...)
		if err != nil {
			t.Error(err)
			continue
		}
		mine := map[string]bool{}
		for _, v := range vs {
			s := v.String()
			h := fnv.New32a()
			v.WriteHash(h)
			if got := h.Sum32(); got != v.Hashcode() {
				t.Errorf("%s: WriteHash gives %#x, Hashcode %#x", s, got, v.Hashcode())
			}
			h = fnv.New32a()
			h.Write([]byte(s))
			if h.Sum32() != v.Hashcode() {
				t.Errorf("%s: Hashcode is not the hash of String", s)
			}
			if mine[s] {
				t.Errorf("%T: two ops that differ in one parameter have the String %q (the parameter is missing from it)", op, s)
			}
			mine[s] = true
			if prev, ok := types[s]; ok && prev != reflect.TypeOf(v) {
				t.Errorf("%v and %T have the String %q", prev, v, s)
			}
			types[s] = reflect.TypeOf(v)
			if prev, ok := hashes[v.Hashcode()]; ok && prev != s {
				t.Errorf("%q and %q hash alike", prev, s)
			}
			hashes[v.Hashcode()] = s
		}
	}
}

// CheckCovers checks that ops holds a value of every op type declared in the non-test Go files
// of dir: every struct type that embeds opkit.Base, and every type defined as one of them.
func CheckCovers(t testing.TB, dir string, ops []G.Op) {
	t.Helper()
	declared, err := OpTypes(dir)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, op := range ops {
		rt := reflect.TypeOf(op)
		if rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		have[rt.Name()] = true
	}
	for _, name := range declared {
		if !have[name] {
			t.Errorf("op type %s (in %s) is missing from the table", name, dir)
		}
	}
}

// OpTypes lists the op types declared in the non-test Go files of dir (see CheckCovers), for
// every build tag: the files are parsed, not compiled.
func OpTypes(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fs := token.NewFileSet()
	bases := map[string]bool{}     // struct types that embed opkit.Base
	defined := map[string]string{} // type name -> the name it is defined as
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fs, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, sp := range gd.Specs {
				ts := sp.(*ast.TypeSpec)
				switch tt := ts.Type.(type) {
				case *ast.Ident:
					defined[ts.Name.Name] = tt.Name
				case *ast.StructType:
					for _, fl := range tt.Fields.List {
						if sel, ok := fl.Type.(*ast.SelectorExpr); ok && len(fl.Names) == 0 && sel.Sel.Name == "Base" {
							if x, ok := sel.X.(*ast.Ident); ok && x.Name == "opkit" {
								bases[ts.Name.Name] = true
							}
						}
					}
				}
			}
		}
	}
	var out []string
	for name := range bases {
		out = append(out, name)
	}
	for name, of := range defined {
		if bases[of] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}
