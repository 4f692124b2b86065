package ui_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/ui"
)

// answer is what a test needs of a response, its body already read.
type answer struct {
	StatusCode int
	Header     http.Header
}

func get(t *testing.T, h http.Handler, path string) (answer, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	resp := rec.Result()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header}, string(b)
}

// The page and its assets are served with a strict CSP, nothing else is,
// and the page loads no inline script or style.
func TestRegister(t *testing.T) {
	mux := http.NewServeMux()
	ui.Register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "catch-all", http.StatusTeapot) })

	t.Run("OK", func(t *testing.T) {
		for path, ct := range map[string]string{"/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
			resp, body := get(t, mux, path)
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if resp.Header.Get("Content-Security-Policy") != ui.CSP || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
				resp.Header.Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("%s: headers %v", path, resp.Header)
			}
			if path == "/" && (strings.Contains(body, "<script>") || strings.Contains(body, "style=") || !strings.Contains(body, `src="/ui/app.js"`)) {
				t.Fatalf("the page has inline script or style, or no app.js: %s", body)
			}
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if resp, _ := get(t, mux, "/ui/nothing.js"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("an unknown asset: %d", resp.StatusCode)
		}
		for _, path := range []string{"/ui/", "/ui/static/app.js", "/index.html", "/v1/nothing"} {
			if resp, _ := get(t, mux, path); resp.StatusCode != http.StatusTeapot {
				t.Fatalf("%s was not left to the other routes: %d", path, resp.StatusCode)
			}
		}
	})
}

func TestPublic(t *testing.T) {
	for path, want := range map[string]bool{
		"/": true, "/ui/app.js": true, "/ui/": false,
		"/ui/../v1/workspaces": false, "/v1/workspaces": false, "/healthz": false, "//": false, "/uix": false,
	} {
		if got := ui.Public(path); got != want {
			t.Errorf("Public(%q) = %v, want %v", path, got, want)
		}
	}
}
