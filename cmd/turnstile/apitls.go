package main

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// apiCertificate serves the HTTP API's TLS certificate from --tls-cert and
// --tls-key and loads them again when either file changes (a renewed
// certificate is picked up without a restart). A renewal that does not load
// keeps the previous pair and is logged.
type apiCertificate struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // digest of the two files' contents
	checked time.Time
}

// newAPICertificate loads the pair once, so that a bad one stops serve at
// start.
func newAPICertificate(certFile, keyFile string, log *slog.Logger) (*apiCertificate, error) {
	c := &apiCertificate{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

// fileStamp is a digest of both files' contents: a renewal is seen
// whatever the file system's timestamps.
func (c *apiCertificate) fileStamp() (string, error) {
	h := sha256.New()
	for _, p := range []string{c.certFile, c.keyFile} {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return string(h.Sum(nil)), nil
}

// get is tls.Config.GetCertificate: the files are read at most once a
// second.
func (c *apiCertificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < time.Second {
		return c.cert, nil
	}
	c.checked = time.Now()
	stamp, err := c.fileStamp()
	if err != nil || stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		// Often a renewal caught between its two writes: the next look
		// tries again.
		c.log.Warn("TLS certificate changed but does not load; serving the previous one", "cert", c.certFile, "err", err)
		return c.cert, nil
	}
	c.cert, c.stamp = &cert, stamp
	c.log.Info("TLS certificate reloaded", "cert", c.certFile)
	return c.cert, nil
}

// tlsConfig is the API listener's TLS configuration.
func (c *apiCertificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}
