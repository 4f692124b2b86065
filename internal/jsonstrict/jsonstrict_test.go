package jsonstrict_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/jsonstrict"
)

type spec struct {
	Image string            `json:"image,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
}

type doc struct {
	ID    string    `json:"id"`
	Type  string    `json:"type"`
	Spec  *spec     `json:"spec,omitempty"`
	List  []spec    `json:"list,omitempty"`
	When  time.Time `json:"when"`
	Plain int
}

// issue 12 item 11: encoding/json accepts both documents below silently;
// Check refuses them and says where.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"OK", `{"id":"a","type":"create","spec":{"image":"x","env":{"A":"1","a":"2"}},"list":[{"image":"y"}],"Plain":1}`, ""},
		{"OKUnknownLeftToDecoder", `{"id":"a","bogus":{"x":1}}`, ""},
		{"OKTimeOpaque", `{"when":"2026-01-01T00:00:00Z"}`, ""},
		{"DuplicateTop", `{"type":"create","id":"a","type":"delete"}`, `duplicate key "type"`},
		{"DuplicateNested", `{"spec":{"image":"a","image":"b"}}`, `duplicate key "image" in $.spec`},
		{"DuplicateMapKey", `{"spec":{"env":{"A":"1","A":"2"}}}`, `duplicate key "A" in $.spec.env`},
		{"DuplicateInArray", `{"list":[{},{"image":"a","image":"b"}]}`, `duplicate key "image" in $.list[1]`},
		{"DuplicateInUnknown", `{"bogus":{"x":1,"x":2}}`, `duplicate key "x" in $.bogus`},
		{"CaseFolded", `{"Type":"create"}`, `field "Type" is not known; did you mean "type"?`},
		{"CaseFoldedNested", `{"spec":{"IMAGE":"a"}}`, `field "IMAGE" in $.spec is not known; did you mean "image"?`},
		{"CaseFoldedUntagged", `{"plain":1}`, `field "plain" is not known; did you mean "Plain"?`},
		{"UnicodeFolded", `{"ſpec":{}}`, `did you mean "spec"?`},
		{"KelvinFolded", "{\"spec\":{\"env\":{},\"image\":\"a\"},\"\u212aind\":1}", ""}, // no field "kind": left to the decoder
		{"Malformed", `{"id":`, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := jsonstrict.For[doc]([]byte(tc.in))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want))):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestErrorParts(t *testing.T) {
	err := jsonstrict.For[doc]([]byte(`{"spec":{"env":{"A":"1","A":"2"}}}`))
	var e *jsonstrict.Error
	if !errors.As(err, &e) || e.Problem != jsonstrict.Duplicate || e.FieldPath() != "spec.env.A" || e.Reason() != "is given twice" {
		t.Fatalf("got %#v", err)
	}
	err = jsonstrict.For[doc]([]byte(`{"ID":"x"}`))
	if !errors.As(err, &e) || e.Problem != jsonstrict.CaseFolded || e.FieldPath() != "ID" || e.Field != "id" {
		t.Fatalf("got %#v", err)
	}
}

// FuzzCheck holds Check to its promise: whatever it passes, and
// encoding/json decodes with unknown fields refused, has no key twice and
// names every field exactly.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","type":"create","spec":{"image":"x","env":{"A":"1"}}}`,
		`{"type":"a","type":"b"}`, `{"Type":"a"}`, `{"spec":{"env":{"A":"1","A":"2"}}}`,
		`{"ſpec":{}}`, `[{"a":1,"a":2}]`, `{"list":[{"Image":"x"}]}`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := jsonstrict.For[doc](b)
		var v doc
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if dec.Decode(&v) != nil || err != nil {
			return
		}
		// Re-read generically: every object's keys distinct, and every key
		// of a struct-shaped object an exact field name.
		if !distinctKeys(t, json.NewDecoder(bytes.NewReader(b))) {
			t.Fatalf("passed a document with a key twice: %q", b)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) == nil {
			for k := range top {
				switch k {
				case "id", "type", "spec", "list", "when", "Plain":
				default:
					t.Fatalf("passed key %q, which only folds to a field: %q", k, b)
				}
			}
		}
	})
}

func distinctKeys(t *testing.T, dec *json.Decoder) bool {
	var stack []map[string]bool
	expectKey := []bool{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, map[string]bool{})
				expectKey = append(expectKey, true)
			case '[':
				stack = append(stack, nil)
				expectKey = append(expectKey, false)
			default:
				stack, expectKey = stack[:len(stack)-1], expectKey[:len(expectKey)-1]
				if n := len(expectKey); n > 0 && stack[n-1] != nil {
					expectKey[n-1] = true
				}
			}
			if n := len(expectKey); (d == '{' || d == '[') && n > 1 && stack[n-2] != nil {
				expectKey[n-2] = true
			}
			continue
		}
		n := len(stack)
		if n == 0 || stack[n-1] == nil {
			continue
		}
		if expectKey[n-1] {
			k := tok.(string)
			if stack[n-1][k] {
				return false
			}
			stack[n-1][k] = true
			expectKey[n-1] = false
		} else {
			expectKey[n-1] = true
		}
	}
}
