package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// TestTokenProof: GET /v1/auth/proof needs no token and answers a nonce
// with a proof per accepted token, each what api.TokenProof computes from
// that token's secret and none usable as a token; a bad nonce is 400.
func TestTokenProof(t *testing.T) {
	other := api.Token{Name: "ci", Secret: "ci-token-0123456789abcdefghijklmnopqrstuvwxyz"}
	e := newEnv(t, envOptions{noReadModel: true, tokens: []api.Token{other}})
	anon := &env{openapi: e.openapi, t: e.t, srv: e.srv}
	const nonce = "n0nce-0123456789_abcdefghijklmn"

	t.Run("OK", func(t *testing.T) {
		r := anon.do(t, "GET", api.ProofPath+"?nonce="+nonce, "")
		e.wantStatus(t, r, http.StatusOK)
		var ans api.ProofAnswer
		r.decode(t, &ans)
		want := []string{api.TokenProof(testToken, nonce), api.TokenProof(other.Secret, nonce)}
		slices.Sort(want)
		got := slices.Sorted(slices.Values(ans.Proofs))
		if !slices.Equal(got, want) {
			t.Fatalf("proofs %q, want %q", got, want)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
		}
		// A proof is no credential: sent as the bearer token, it is refused.
		as := &env{openapi: e.openapi, t: e.t, srv: e.srv, token: ans.Proofs[0]}
		e.wantStatus(t, as.do(t, "GET", "/v1/workspaces", ""), http.StatusUnauthorized)
	})
	t.Run("FreshNonceFreshProof", func(t *testing.T) {
		if api.TokenProof(testToken, nonce) == api.TokenProof(testToken, nonce+"x") ||
			api.TokenProof(testToken, nonce) == api.TokenProof(other.Secret, nonce) {
			t.Fatal("a proof does not depend on both the nonce and the secret")
		}
	})
	t.Run("BadNonceIs400", func(t *testing.T) {
		for _, q := range []string{"", "?nonce=short", "?nonce=" + strings.Repeat("a", 129), "?nonce=" + nonce + "%21",
			"?nonce=" + nonce + "&nonce=" + nonce, "?nonce=" + nonce + "&name=default"} {
			r := anon.do(t, "GET", api.ProofPath+q, "")
			e.wantStatus(t, r, http.StatusBadRequest)
		}
	})
}
