package jsonstrict

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Problem is what a *Error found.
type Problem int

const (
	// Duplicate is a key given twice in one object.
	Duplicate Problem = iota + 1
	// CaseFolded is a key that matches a field only when case is ignored.
	CaseFolded
)

// Error is a refused document: which key, where, and why.
type Error struct {
	Problem Problem
	// Path is the object holding the key, as $ and .member or [index]
	// steps: "$", "$.spec", "$.spec.env".
	Path string
	// Key is the key as the document spells it.
	Key string
	// Field is the field the key resembles (CaseFolded only).
	Field string
}

func (e *Error) Error() string {
	where := ""
	if e.Path != "$" {
		where = " in " + e.Path
	}
	switch e.Problem {
	case Duplicate:
		return fmt.Sprintf("duplicate key %q%s", e.Key, where)
	default:
		return fmt.Sprintf("field %q%s is not known; did you mean %q?", e.Key, where, e.Field)
	}
}

// FieldPath is where the key is, as a dotted field name without the
// leading $: "spec.env.A", or "type" at the top level.
func (e *Error) FieldPath() string {
	p := strings.TrimPrefix(strings.TrimPrefix(e.Path, "$"), ".")
	if p == "" {
		return e.Key
	}
	return p + "." + e.Key
}

// Reason is the error without the key's name, for callers that show the
// field and the reason apart.
func (e *Error) Reason() string {
	if e.Problem == Duplicate {
		return "is given twice"
	}
	return fmt.Sprintf("is not known; did you mean %q?", e.Field)
}

// ErrMalformed wraps what the tokenizer could not read.
var ErrMalformed = errors.New("jsonstrict: malformed JSON")

// For checks data against the type T it is decoded into.
func For[T any](data []byte) error {
	return Check(data, reflect.TypeFor[T]())
}

// Check checks data, one JSON value (trailing data is not looked at),
// against t; a nil t checks duplicate keys alone.
func Check(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return walk(dec, t, "$")
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk reads one value and checks it against t (nil: any shape).
func walk(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w at %s: %v", ErrMalformed, path, err)
	}
	t = shape(t)
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: the decoder checks its type
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case '{':
		var fields *structFields
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = fieldsOf(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := make(map[string]struct{})
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w at %s: %v", ErrMalformed, path, err)
			}
			key, ok := kt.(string)
			if !ok {
				return fmt.Errorf("%w at %s: key %v is not a string", ErrMalformed, path, kt)
			}
			if _, dup := seen[key]; dup {
				return &Error{Problem: Duplicate, Path: path, Key: key}
			}
			seen[key] = struct{}{}
			vt := elem
			if fields != nil {
				f, exact := fields.byName[key]
				if !exact {
					if name := fields.folded(key); name != "" {
						return &Error{Problem: CaseFolded, Path: path, Key: key, Field: name}
					}
				}
				vt = f // nil for an unknown key: the decoder refuses it
			}
			if err := walk(dec, vt, path+"."+key); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w at %s: unexpected %v", ErrMalformed, path, d)
	}
	// The closing delimiter.
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w at %s: %v", ErrMalformed, path, err)
	}
	return nil
}

// shape is the type whose fields or elements matter: pointers are looked
// through, and a type that decodes itself has no shape known here.
func shape(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) ||
			t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			return t
		}
		t = t.Elem()
	}
	return nil
}

// structFields are a struct's JSON member names and their types.
type structFields struct {
	byName map[string]reflect.Type
	names  []string // in declaration order
}

// folded is the field name key equals under Unicode case folding, as
// encoding/json matches them ("ſpec" is "spec" to it), or "".
func (f *structFields) folded(key string) string {
	for _, n := range f.names {
		if strings.EqualFold(key, n) {
			return n
		}
	}
	return ""
}

// fieldsOf lists t's fields. Not cached: the types are small, the
// documents bounded, and a cache would be package state.
func fieldsOf(t reflect.Type) *structFields {
	f := &structFields{byName: map[string]reflect.Type{}}
	collect(t, f, 0)
	return f
}

// collect adds t's fields as encoding/json names them: the tag's name, else
// the Go name; embedded structs without a tag lend their fields.
func collect(t reflect.Type, f *structFields, depth int) {
	if depth > 8 {
		return
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := sf.Type
		if sf.Anonymous && name == "" {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				collect(et, f, depth+1)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, ok := f.byName[name]; ok {
			continue // the shallower field wins, as in encoding/json
		}
		f.byName[name] = ft
		f.names = append(f.names, name)
	}
}
