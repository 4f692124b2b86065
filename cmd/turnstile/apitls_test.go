package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a fresh self-signed certificate named cn and its key.
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAPICertificate: issue 12 item 9. A bad pair stops serve at start; a
// renewed pair is served without a restart, and a broken renewal keeps the
// previous certificate.
func TestAPICertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := newAPICertificate(certFile, keyFile, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("missing files were accepted")
	}
	writeCert(t, certFile, keyFile, "first")
	c, err := newAPICertificate(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		c.mu.Lock()
		c.checked = time.Time{} // look at the files now
		c.mu.Unlock()
		cert, err := c.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("serving %q", got)
	}
	writeCert(t, certFile, keyFile, "renewed")
	if got := served(); got != "renewed" {
		t.Fatalf("after renewal serving %q", got)
	}
	if err := os.WriteFile(keyFile, []byte("not a key, and longer than the last one was\n"+string(make([]byte, 300))), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != "renewed" {
		t.Fatalf("after a broken renewal serving %q", got)
	}
}
